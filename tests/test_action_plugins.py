"""A shop's own action, plugged in through KAIROS_ACTIONS under a new name: one registration
declares it to the compiler and implements it on the worker."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from activities import actions
from kairos.language import actions_catalogue
from kairos.language.actions_catalogue import ACTIONS, ActionModuleError
from kairos.language.problems import ProjectError
from kairos.language.project import load_project
from kairos.runtime.contract import ActionRequest
from tests.test_language_invalid import make_project

PLUGIN = """
from activities.actions import register
from kairos.language.actions_catalogue import ActionSpec, Argument
from kairos.language.catalogue import AttrType

GIFT = ActionSpec(
    name="send_gift",
    description="Post a small gift to the customer.",
    args={"sku": Argument(AttrType.string, required=True)},
    result={"tracking": "TRK-SAMPLE"},
)


@register("send_gift", spec=GIFT)
async def send_gift(ctx, args):
    return {"tracking": "TRK-" + args["sku"]}
"""
JOURNEY = """journey: gift
trigger: api
steps:
  - action: send_gift
    with: {sku: mug}
    save_as: gift
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a module that plugs in ``send_gift``; the registries are put back after."""
    name = f"shop_actions_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    declared = dict(actions_catalogue._DECLARED)
    implemented = dict(actions._REGISTRY)
    yield name
    sys.modules.pop(name, None)
    actions_catalogue._DECLARED.clear()
    actions_catalogue._DECLARED.update(declared)
    actions._REGISTRY.clear()
    actions._REGISTRY.update(implemented)


def _home(tmp_path: Path) -> Path:
    home = make_project(tmp_path)
    (home / "journeys" / "gift.yaml").write_text(JOURNEY)
    return home


def test_a_journey_may_call_an_action_a_plugged_in_module_adds(plugin: str, tmp_path: Path) -> None:
    home = _home(tmp_path)
    with pytest.raises(ProjectError, match="unknown action `send_gift`"):
        load_project(home)

    project = load_project(home, actions=[plugin])

    assert "gift" in project.plans
    assert sorted(ACTIONS) == ["grant_referral_reward", "issue_coupon", "notify_sales", "send_gift"]


async def test_the_worker_runs_the_plugged_in_action_the_compiler_accepted(
    plugin: str, tmp_path: Path
) -> None:
    load_project(_home(tmp_path), actions=[plugin])
    request = ActionRequest(key="k1", customer_id="c1", journey="gift", step="s1",
                            action="send_gift", args={"sku": "mug"})  # fmt: skip

    assert await actions.Actions(tmp_path).run_action(request) == {"tracking": "TRK-mug"}


def test_a_module_that_cannot_be_imported_stops_the_project_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ActionModuleError) as refused:
        load_project(_home(tmp_path), actions=["no_such_shop_module"])

    assert isinstance(refused.value, ProjectError)
    assert str(refused.value) == (
        "KAIROS_ACTIONS: cannot import 'no_such_shop_module': ModuleNotFoundError: No module "
        "named 'no_such_shop_module' (name a module on the Python path that registers actions)"
    )
