"""URL and key helpers for the push/pull session tests."""


def push_url(binding_id, *rest):
    return "/".join([f"/v1/workspace-bindings/{binding_id}/push-sessions", *map(str, rest)])


def pull_url(binding_id, *rest):
    return "/".join([f"/v1/workspace-bindings/{binding_id}/pull-sessions", *map(str, rest)])


def sessions_url(direction, binding_id, *rest):
    return (push_url if direction == "push" else pull_url)(binding_id, *rest)


def key_of(direction):
    return f"{direction}Session"
