"""The settings reference in docs/operations.md is the one generated from the settings model."""

from __future__ import annotations

import pytest

from mcp_celery_bridge.bridge.shared.settings import reference
from tests.services import ROOT

pytestmark = pytest.mark.fast


def test_the_docs_list_every_setting_as_the_model_declares_it() -> None:
    readme = (ROOT / "docs" / "operations.md").read_text()
    documented = readme.split("<!-- settings:begin -->\n")[1].split("<!-- settings:end -->")[0]
    assert documented == reference(), (
        "docs/operations.md's settings table is stale: paste the output of "
        "`python -c 'from mcp_celery_bridge.bridge.shared.settings import reference; "
        "print(reference())'`"
    )
