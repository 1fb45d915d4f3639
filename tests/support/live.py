"""An embedded gateway served on a real port inside the test process."""

from __future__ import annotations

from dataclasses import dataclass

from gateway import create_app
from gateway.db.models import Message
from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN
from tests.support.net import LiveServer, free_port
from tests.support.observe import all_messages, still_busy, wait_until


@dataclass
class LiveGateway:
    runtime: object
    server: LiveServer
    phone: object

    @classmethod
    def start(cls, settings, make_runtime) -> "LiveGateway":
        from gateway.simulator import Phone

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        runtime = make_runtime(settings.replace(public_url=url))
        server = LiveServer(create_app(runtime=runtime), port).start()
        return cls(runtime, server, Phone(url, AUTH_TOKEN, ACCOUNT_SID))

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.phone.close()
        self.server.stop()

    def messages(self, role: str | None = None) -> list[Message]:
        return all_messages(self.runtime, role)

    def wait_for(self, predicate, timeout: float = 15.0, what: str = "condition"):
        return wait_until(predicate, timeout, what)

    def settled(self, timeout: float = 15.0) -> list[Message]:
        """Wait until no inbound text is received and no reply queued or in flight; return all messages."""

        def done():
            messages = self.messages()
            return messages if messages and not still_busy(messages) else None

        return self.wait_for(done, timeout, "all texts handled and replies sent")
