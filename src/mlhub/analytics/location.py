"""Where the metric tables live: a local folder, or a prefix on S3-compatible storage (``MLHUB_METRICS_URI``).

One value, `MetricsLocation`, says it for every reader and writer: the Delta tables' URIs with the storage
options delta-rs needs, and for S3 the Arrow file system that readers scan the tables' Parquet files through
(DuckDB reads them as Arrow datasets, so no DuckDB extension is downloaded at run time).

Commits on S3 are made safe by conditional writes: delta-rs writes each commit file ``_delta_log/<version>.json``
with ``If-None-Match: *`` (storage option ``conditional_put = etag``), so of two writers racing for one version
exactly one succeeds and the other gets a commit conflict (it refreshes and retries, as on a local disk). AWS S3,
MinIO, Ceph and moto support conditional writes; on a store that does not, the first commit fails with a clear
error instead of silently overwriting. The single active metric projector (the projector lock) is the only
writer of points; compaction runs in the same process.

Credentials and the region come from the standard ``AWS_*`` variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``); the endpoint of an
S3-compatible service from ``MLHUB_S3_ENDPOINT_URL`` (the same setting the artifact store uses).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from mlhub.analytics.errors import MetricTableError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from mlhub.settings import Settings


@dataclass(frozen=True)
class MetricsLocation:
    """The root of the metric tables: an absolute local folder, or ``s3://bucket/prefix``."""

    #: ``s3://bucket/prefix`` (no trailing slash), or an absolute local path.
    uri: str
    #: Endpoint URL of an S3-compatible service (None: AWS S3, or what the AWS_* variables say).
    endpoint_url: str | None = None
    _fs: list[pafs.FileSystem] = field(default_factory=list, compare=False, repr=False)

    @property
    def is_local(self) -> bool:
        """Whether the tables live on a local (or mounted) file system."""
        return not self.uri.startswith("s3://")

    @property
    def local_dir(self) -> Path:
        """The local folder (only for a local location)."""
        if not self.is_local:
            raise MetricTableError(f"the metric tables at {self.uri} are not in a local folder")
        return Path(self.uri)

    def table_uri(self, name: str) -> str:
        """URI of one table (``points``, ``runs``) as delta-rs takes it."""
        return f"{self.uri}/{name}"

    @property
    def storage_options(self) -> dict[str, str]:
        """delta-rs' storage options (empty for a local folder)."""
        if self.is_local:
            return {}
        options = {"conditional_put": "etag"}
        if self.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            options["AWS_REGION"] = region
        return options

    def filesystem(self) -> pafs.FileSystem:
        """The Arrow file system that reads this location's files (made once per location)."""
        if not self._fs:
            import pyarrow.fs as pafs

            if self.is_local:
                self._fs.append(pafs.LocalFileSystem())
            else:
                options: dict[str, object] = {}
                if self.endpoint_url:
                    endpoint = urlparse(self.endpoint_url)
                    options.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme or "https")
                region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                if region:
                    options["region"] = region
                self._fs.append(pafs.S3FileSystem(**options))
        return self._fs[0]

    def file_path(self, uri: str) -> str:
        """A data file's path as this location's file system (or DuckDB, for a local one) reads it."""
        if uri.startswith("file://"):
            from urllib.parse import unquote

            return unquote(urlparse(uri).path)
        if uri.startswith("s3://"):
            return uri.removeprefix("s3://")
        return uri

    def wait_until_readable(self, timeout_s: float = 30.0) -> None:
        """For S3: wait until the bucket answers (a service that is still starting); MetricTableError after."""
        if self.is_local:
            return
        import pyarrow.fs as pafs

        bucket = self.uri.removeprefix("s3://").split("/", 1)[0]
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.filesystem().get_file_info(bucket).type != pafs.FileType.NotFound:
                    return
                raise MetricTableError(f"MLHUB_METRICS_URI {self.uri}: the bucket {bucket!r} does not exist")
            except OSError as e:
                if time.monotonic() > deadline:
                    raise MetricTableError(f"MLHUB_METRICS_URI {self.uri}: the store does not answer: {e}") from e
                time.sleep(0.5)

    def __str__(self) -> str:
        return self.uri


def metrics_location(target: MetricsLocation | Path | str, *, endpoint_url: str | None = None) -> MetricsLocation:
    """A location from a local path, an ``s3://bucket/prefix`` or ``file://`` URI, or a location (returned)."""
    if isinstance(target, MetricsLocation):
        return target
    text = str(target)
    if text.startswith("s3://"):
        bucket, _, prefix = text.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        if not bucket or not prefix:
            raise MetricTableError(
                f"metric tables URI {text!r} must name a bucket and a prefix, e.g. s3://team-bucket/mlhub/metrics"
            )
        return MetricsLocation(uri=f"s3://{bucket}/{prefix}", endpoint_url=endpoint_url)
    if "://" in text and not text.startswith("file://"):
        raise MetricTableError(
            f"metric tables URI {text!r}: expected a local path, file:///abs/path or s3://bucket/prefix"
        )
    path = Path(urlparse(text).path) if text.startswith("file://") else Path(text)
    return MetricsLocation(uri=str(path.absolute()))


def location_from_settings(settings: Settings) -> MetricsLocation:
    """The metric tables of these settings: MLHUB_METRICS_URI, else DATA_DIR/metrics."""
    return metrics_location(settings.metrics_uri or settings.metrics_dir, endpoint_url=settings.s3_endpoint_url)
