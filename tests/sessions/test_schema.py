import pytest
import yaml

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(anon):
    return yaml.safe_load(anon.get("/api/schema/").content)


def test_launch_and_daemon_endpoints_are_documented(schema):
    paths = schema["paths"]
    launch = paths["/api/v1/workspaces/{workspace_id}/sessions"]["post"]
    assert set(launch["responses"]) >= {"200", "400", "401", "403", "404", "504"}
    body = schema["components"]["schemas"][
        launch["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    ]
    assert set(body["properties"]) == {
        "machine_id",
        "user_session_id",
        "metadata",
        "initial_prompt",
        "worktree_name",
        "session_settings",
        "resume_session_id",
        "agent_session_id",
    }
    answer_ref = launch["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schema["components"]["schemas"][answer_ref.rsplit("/", 1)[1]]["properties"]) == {"status", "payload"}

    assert "get" in paths["/api/v1/workspaces/{workspace_id}/sessions"]
    poll = paths["/api/v1/machines/{machine_id}/launches"]["get"]
    assert {parameter["name"] for parameter in poll["parameters"]} >= {"machine_id", "wait", "limit"}
    queue_ref = poll["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][queue_ref]["properties"]) == {
        "object",
        "data",
        "total_count",
        "has_more",
    }
    ack = paths["/api/v1/machines/{machine_id}/launches/{launch_id}/ack"]["post"]
    assert set(ack["responses"]) >= {"200", "400", "404", "409"}


def test_workspace_is_bare_and_snake_case(schema):
    created = schema["paths"]["/api/v1/workspaces"]["post"]["responses"]["201"]
    ref = created["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][ref]["properties"]) == {
        "id",
        "name",
        "project_id",
        "default_machine_id",
        "created_at",
        "updated_at",
    }


def test_the_machine_channel_is_documented_as_a_stream_of_three_events(schema):
    channel = schema["paths"]["/api/v1/machines/{machine_id}/stream"]["get"]
    assert set(channel["responses"]["200"]["content"]) == {"text/event-stream"}
    assert {"400", "401", "404"} <= set(channel["responses"])
    assert "Last-Event-ID" in {parameter["name"] for parameter in channel["parameters"]}
    ref = channel["responses"]["200"]["content"]["text/event-stream"]["schema"]["$ref"].rsplit("/", 1)[1]
    event = schema["components"]["schemas"][ref]["properties"]["event"]["allOf"][0]["$ref"].rsplit("/", 1)[1]
    assert event == "MachineChannelEventEnum"
    assert schema["components"]["schemas"][event]["enum"] == ["launch", "command", "replaced"]
