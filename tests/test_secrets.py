"""A Roboflow key stored in a Prefect Secret block reaches the library through the environment."""

from __future__ import annotations

import os

import pytest

from pyroblur.core.errors import ConfigurationError
from pyroblur.data.sources.models import RoboflowSource

pytestmark = pytest.mark.integration  # a real Prefect API server holds the block


@pytest.fixture
def api(prefect_server, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        yield prefect_server


def test_secret_block_fills_the_key_variable(api, monkeypatch):
    from prefect.blocks.system import Secret

    from tasks._secrets import load_secret_blocks

    Secret(value="rf-secret-123").save("pyroblur-test-rf-key", overwrite=True)
    monkeypatch.delenv("PYROBLUR_TEST_RF_KEY", raising=False)
    src = RoboflowSource(api_key_env="PYROBLUR_TEST_RF_KEY", api_key_secret_block="pyroblur-test-rf-key")
    load_secret_blocks([src])
    assert os.environ["PYROBLUR_TEST_RF_KEY"] == "rf-secret-123"

    # an explicit environment variable wins over the stored block
    monkeypatch.setenv("PYROBLUR_TEST_RF_KEY", "from-env")
    load_secret_blocks([src])
    assert os.environ["PYROBLUR_TEST_RF_KEY"] == "from-env"


def test_missing_block_is_a_named_configuration_error(api, monkeypatch):
    from tasks._secrets import load_secret_blocks

    monkeypatch.delenv("PYROBLUR_TEST_RF_KEY", raising=False)
    src = RoboflowSource(name="plates", api_key_env="PYROBLUR_TEST_RF_KEY", api_key_secret_block="no-such-block")
    with pytest.raises(ConfigurationError, match="no-such-block") as err:
        load_secret_blocks([src])
    assert "plates" in str(err.value) and err.value.exit_code == 2
