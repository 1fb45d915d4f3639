"""Outbound SMS senders: Twilio's REST API, or the sandbox that records and delivers locally."""
