"""How an ingress replica notices that Serve is removing it (``stopping.py``), without a cluster: the controller's
answer is built with the installed Ray's own ``ServeInstanceDetails`` schema, so a change of its shape fails here.
The real removal, drain and all, runs in ``test_ingress_drain.py``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")

from ray.serve._private.common import ReplicaState  # noqa: E402
from ray.serve.schema import (  # noqa: E402
    ApplicationDetails,
    DeploymentDetails,
    DeploymentSchema,
    ReplicaDetails,
    ServeInstanceDetails,
)

from stream_server.cluster import stopping  # noqa: E402
from stream_server.cluster.stopping import ReplicaRef, replica_state, wait_until_stopping  # noqa: E402

ME = ReplicaRef("stream-server", "Ingress", "abc123")


def instance_details(states: dict[str, str], app: str = "stream-server") -> dict[str, Any]:
    """What the controller's ``get_serve_instance_details`` answers, with these Ingress replicas (id -> state)."""
    replicas = [ReplicaDetails(replica_id=rid, state=state, start_time_s=0.0) for rid, state in states.items()]
    deployment = DeploymentDetails(
        name="Ingress",
        status="HEALTHY",
        status_trigger="CONFIG_UPDATE_COMPLETED",
        message="",
        deployment_config=DeploymentSchema(name="Ingress"),
        target_num_replicas=len(replicas),
        required_resources={},
        replicas=replicas,
    )
    application = ApplicationDetails(
        name=app,
        route_prefix="/",
        docs_path=None,
        status="RUNNING",
        message="",
        last_deployed_time_s=0.0,
        source="imperative",
        deployments={"Ingress": deployment},
        external_scaler_enabled=False,
    )
    details = ServeInstanceDetails(proxies={}, applications={app: application})
    return details._get_user_facing_json_serializable_dict(exclude_unset=True)  # as the controller serializes it


def test_a_replica_finds_its_own_state_in_the_controllers_answer() -> None:
    details = instance_details({"abc123": "STOPPING", "def456": "RUNNING"})
    assert replica_state(details, ME) == stopping.STOPPING == ReplicaState.STOPPING.value
    assert replica_state(details, ReplicaRef("stream-server", "Ingress", "def456")) == "RUNNING"
    as_json = json.loads(json.dumps(details))  # the REST API's form: the states as plain strings
    assert replica_state(as_json, ME) == stopping.STOPPING
    assert replica_state(details, ReplicaRef("stream-server", "Ingress", "gone")) is None
    assert replica_state(details, ReplicaRef("stream-server", "Decoder", "abc123")) is None
    assert replica_state(instance_details({"abc123": "STOPPING"}, app="other"), ME) is None
    assert replica_state({"applications": {}}, ME) is None


def test_the_wait_ends_on_its_own_stopping_only_and_polls_through_failures() -> None:
    answers: list[Any] = [
        instance_details({"abc123": "STARTING"}),
        instance_details({"abc123": "RUNNING", "def456": "STOPPING"}),  # a sibling leaving is not our drain
        RuntimeError("controller restarting"),
        instance_details({}),  # not listed while the controller recovers
        instance_details({"abc123": "STOPPING", "def456": "STOPPING"}),
        instance_details({"abc123": "RUNNING"}),  # never read
    ]
    asked = 0

    async def fetch() -> dict[str, Any]:
        nonlocal asked
        answer = answers[asked]
        asked += 1
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    asyncio.run(asyncio.wait_for(wait_until_stopping(fetch, ME, poll_s=0.001), 5))
    assert asked == 5


def test_the_wait_keeps_polling_while_the_replica_runs() -> None:
    asked = 0

    async def fetch() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        return instance_details({"abc123": "RUNNING"})

    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(wait_until_stopping(fetch, ME, poll_s=0.01), 0.2))
    assert 5 <= asked <= 25  # one controller call per poll, not a busy loop


def test_outside_a_serve_replica_nothing_stops_it() -> None:
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(stopping.wait_for_serve_stopping(), 0.1))


def test_the_controller_is_looked_up_by_the_installed_rays_own_name() -> None:
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    assert (stopping.CONTROLLER_NAME, stopping.CONTROLLER_NAMESPACE) == (SERVE_CONTROLLER_NAME, SERVE_NAMESPACE)
