"""Walks a synthesised template's IAM policy documents and the references inside expressions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Policies attached to identities (roles) and policies attached to resources.
IDENTITY_POLICY_TYPES = {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}
RESOURCE_POLICY_TYPES = {
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::SecretsManager::ResourcePolicy",
}


@dataclass(frozen=True)
class Statement:
    policy: str  # logical id of the policy (or role, for inline policies)
    roles: tuple[str, ...]  # logical ids of the roles it is attached to
    body: dict[str, Any]

    @property
    def actions(self) -> list[str]:
        return as_list(self.body.get("Action"))

    @property
    def resources(self) -> list[Any]:
        return as_list(self.body.get("Resource"))

    @property
    def allows(self) -> bool:
        return self.body.get("Effect") == "Allow"


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def identity_statements(resources: dict[str, dict[str, Any]]) -> Iterator[Statement]:
    """Every statement of every identity policy, inline role policies included."""
    for lid, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] in IDENTITY_POLICY_TYPES:
            roles = tuple(refs(props.get("Roles", [])))
            for body in as_list(props["PolicyDocument"].get("Statement")):
                yield Statement(lid, roles, body)
        elif resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                for body in as_list(policy["PolicyDocument"].get("Statement")):
                    yield Statement(lid, (lid,), body)


def resource_statements(resources: dict[str, dict[str, Any]]) -> Iterator[Statement]:
    for lid, resource in resources.items():
        if resource["Type"] in RESOURCE_POLICY_TYPES:
            for body in as_list(resource["Properties"]["PolicyDocument"].get("Statement")):
                yield Statement(lid, (), body)


def refs(expression: Any) -> set[str]:
    """Logical ids an expression points at through Ref / Fn::GetAtt (pseudo parameters excluded)."""
    found: set[str] = set()
    if isinstance(expression, dict):
        for key, value in expression.items():
            if key == "Ref" and isinstance(value, str) and not value.startswith("AWS::"):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else value.split(".")[0])
            else:
                found |= refs(value)
    elif isinstance(expression, list):
        for item in expression:
            found |= refs(item)
    return found


def literals(expression: Any) -> str:
    """The literal text inside an expression (Fn::Join parts, Fn::Sub strings), concatenated."""
    if isinstance(expression, str):
        return expression
    if isinstance(expression, dict):
        return "".join(literals(v) for k, v in expression.items() if k not in {"Ref", "Fn::GetAtt"})
    if isinstance(expression, list):
        return "".join(literals(item) for item in expression)
    return ""
