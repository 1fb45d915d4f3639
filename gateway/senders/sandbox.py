"""The sandbox sender: used when no Twilio credentials are set.

Messages are recorded in the database like real ones and reported delivered at
once, so the demo, the console and the CLI show the whole path without a
Twilio account.
"""

from __future__ import annotations

import logging
import uuid

from gateway.ports import OutboundSms, SendReceipt

log = logging.getLogger("gateway.sandbox")


class SandboxSender:
    name = "sandbox"

    def send(self, sms: OutboundSms) -> SendReceipt:
        # Imported here: gateway.domain.phone loads phonenumbers, and every CLI command builds a sender
        # that most never use.
        from gateway.domain.phone import mask

        sid = "SM" + uuid.uuid4().hex
        log.info("event=sandbox.sent message=%s sid=%s to=%s chars=%d", sms.message_id, sid, mask(sms.to), len(sms.body))
        return SendReceipt(sid=sid, status="delivered")
