"""The API docs read like a product's: every operation sits under its resource's tag and has a summary."""

import pytest
from drf_spectacular.generators import SchemaGenerator

from acp.api.schema import RESOURCES

pytestmark = pytest.mark.django_db


def test_every_operation_is_tagged_by_resource_and_summarised():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    tags = {tag for _, tag, _ in RESOURCES}
    seen = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert len(operation["tags"]) == 1 and operation["tags"][0] in tags, (method, path, operation["tags"])
            assert operation.get("summary"), (method, path)
            assert {"400", "401", "404"} <= set(operation["responses"]), (method, path)
            seen.add(operation["tags"][0])
    assert seen == tags
