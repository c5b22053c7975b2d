"""The API starts without torch or lightning (DESIGN: it never trains)."""

from __future__ import annotations

import subprocess
import sys

from tests.test_cli import HEAVY_IMPORT_SPY


def test_the_api_and_its_routes_import_no_torch() -> None:
    probe = HEAVY_IMPORT_SPY + """
from mlhub.api import create_app
from mlhub.settings import Settings
app = create_app(Settings(api_tokens="abcdefgh:admin"))
app.openapi()
import mlhub.api.routes_write, mlhub.scheduler  # imported lazily by the write handlers
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning'))
print('ATTEMPTS', attempts, 'LOADED', heavy)
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ATTEMPTS [] LOADED []" in result.stdout, result.stdout


def test_bad_token_settings_fail_at_startup_naming_the_entry() -> None:
    import pytest

    from mlhub.api import create_app
    from mlhub.errors import InvalidInput
    from mlhub.settings import Settings

    with pytest.raises(InvalidInput, match="entry 2 has role 'root'"):
        create_app(Settings(api_tokens="abcdefgh:admin,ijklmnop:root"))
    with pytest.raises(InvalidInput, match="at least 8"):
        create_app(Settings(api_tokens="short:reader"))
