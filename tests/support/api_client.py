"""The Flask test client as an API caller: shared by the integration tests of the REST API."""

from __future__ import annotations


class ApiClient:
    """The Flask test client with the given auth headers on every request."""

    def __init__(self, client, headers: dict):
        self.client = client
        self.headers = headers

    def request(self, method: str, path: str, body=None, **kwargs):
        if body is not None:
            kwargs["json"] = body
        return self.client.open(path, method=method, headers=self.headers, **kwargs)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body=None, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def patch(self, path: str, body=None, **kwargs):
        return self.request("PATCH", path, body, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)
