"""Events shaped exactly as Lambda delivers them, and an SQS drain loop that behaves like the
Lambda SQS poller (batches of up to 10, delete what succeeded, leave the reported failures)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

from tests.plugins.aws_servers import ACCOUNT, REGION, Queue

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def s3_notification(bucket: str, key: str, action: str, sequencer: str | None = None) -> dict[str, Any]:
    """An S3 event notification (as S3 writes it: the key URL-encoded, spaces as '+')."""
    obj: dict[str, Any] = {"key": quote_plus(key), "size": 1, "eTag": "0"}
    if sequencer is not None:
        obj["sequencer"] = sequencer
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventName": "ObjectCreated:Put" if action == "created" else "ObjectRemoved:Delete",
                "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj},
            }
        ]
    }


def sqs_event(messages: list[dict[str, Any]], queue_name: str = "queue") -> dict[str, Any]:
    """``messages`` as returned by ReceiveMessage -> the event Lambda's SQS poller sends."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue_name}",
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def receive(queue: Queue, max_messages: int = 10) -> list[dict[str, Any]]:
    response = queue.sqs.receive_message(
        QueueUrl=queue.url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=0
    )
    return list(response.get("Messages", []))


def settle(queue: Queue, messages: list[dict[str, Any]], response: dict[str, Any]) -> list[str]:
    """What the poller does with the handler's answer: delete the successes; the reported failures
    become visible again (immediately here, after the visibility timeout in AWS)."""
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    for m in messages:
        if m["MessageId"] in failed:
            queue.sqs.change_message_visibility(
                QueueUrl=queue.url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
            )
        else:
            queue.sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=m["ReceiptHandle"])
    return sorted(failed)


def drain(queue: Queue, handler: Handler) -> list[dict[str, Any]]:
    """Deliver the queue to ``handler`` batch by batch until it is empty; the handler's responses.

    Stops (rather than spinning) once a batch reports failures, since those come straight back.
    """
    responses = []
    while messages := receive(queue):
        response = handler(sqs_event(messages, queue.name))
        responses.append(response)
        if settle(queue, messages, response):
            break
    return responses


def discard(queue: Queue) -> int:
    """Delete whatever is queued (PurgeQueue is limited to once a minute); how many were dropped."""
    dropped = 0
    while messages := receive(queue):
        for m in messages:
            queue.sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=m["ReceiptHandle"])
        dropped += len(messages)
    return dropped


def send(queue: Queue, notification: dict[str, Any]) -> None:
    queue.sqs.send_message(QueueUrl=queue.url, MessageBody=json.dumps(notification))


def http_api_event(
    method: str, path: str, body: bytes | str = b"", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """API Gateway HTTP API (payload format 2.0) event; binary bodies base64-encoded as API Gateway does."""
    raw = body.encode() if isinstance(body, str) else body
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "api.example.com", **(headers or {})},
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "api",
            "domainName": "api.example.com",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.9",
                "userAgent": "test",
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 1767225600000,
        },
        "body": base64.b64encode(raw).decode(),
        "isBase64Encoded": True,
    }


def rest_api_event(
    method: str, path: str, body: str = "", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """API Gateway REST API (Lambda proxy, payload format 1.0) event with a text body."""
    all_headers = {"Host": "api.example.com", **(headers or {})}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": uuid.uuid4().hex,
            "identity": {"sourceIp": "203.0.113.9"},
        },
        "body": body or None,
        "isBase64Encoded": False,
    }


def json_body(response: dict[str, Any]) -> Any:
    body = response["body"]
    return json.loads(base64.b64decode(body) if response.get("isBase64Encoded") else body)
