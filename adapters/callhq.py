"""The callhq engine: a CallHQ-style chat API (the shapes this gateway's own session/chat API follows).

Engine settings: ``baseUrl`` (the API's root; paths below are joined to it),
``apiKey`` (sent as ``x-api-key`` on every call) and ``assistantId`` (the
remote assistant).

Per gateway session, once: ``POST {baseUrl}/api/sessions`` ``{name,
assistantId}``, answered ``{"session": {"id": ...}}``; the remote id is kept
in the session's engine state. Per turn: ``POST {baseUrl}/api/chats``
``{sessionId, input, assistantOverrides}``, answered ``{"chat": {"output":
[{"role", "content"}], "cost"}}``.

* ``assistantOverrides`` holds ``variableValues`` (see adapters.session_chat)
  and the session's ``model``, ``temperature`` and ``maxTokens`` when set.
* A 404 on a chat means the remote session expired or was deleted: a new one
  is created and the chat sent again, once. A 404 for a session created in
  this very try is a real error (wrong assistant, wrong URL) and is raised.
* The protocol has no media field: attachments become a note in ``input``.
* ``chat.cost``, when reported, is the turn's cost.
"""

from __future__ import annotations

from adapters.base import EngineContext, Reply, UserTurn, text_with_media_note
from adapters.http import EngineRefused, malformed, reported_cost, turn_deadline
from adapters.session_chat import SessionChatEngine, id_of, operator_variables, output_texts, remote_state

SESSION_NAME_LIMIT = 40  # CallHQ-style APIs refuse longer session names
ENGINE_OVERRIDES = ("model", "temperature", "maxTokens")


class CallHQEngine(SessionChatEngine):
    provider = "callhq"
    example_url = "https://api.callhq.example"
    api_key_meaning = "the API key, sent as x-api-key"
    assistant_id_meaning = "the id of the assistant on the CallHQ side"

    @staticmethod
    def auth_headers(api_key: str) -> dict:
        return {"x-api-key": api_key}

    def reply(self, context: EngineContext, turn: UserTurn) -> Reply:
        deadline = turn_deadline(self.timeout)
        state = remote_state(context, self.provider, baseUrl=self.base_url, assistantId=self.assistant_id)
        opened_now = not state.get("sessionId")
        if opened_now:
            state["sessionId"] = self._open_session(context, deadline)
        try:
            answer = self._chat(context, turn, state["sessionId"], deadline)
        except EngineRefused as refused:
            if refused.status != 404 or opened_now:
                raise
            state["sessionId"] = self._open_session(context, deadline)
            answer = self._chat(context, turn, state["sessionId"], deadline)
        chat = answer.get("chat") if isinstance(answer, dict) else None
        if not isinstance(chat, dict):
            raise malformed(self.provider, 'expected {"chat": {...}}')
        return Reply(texts=output_texts(self.provider, chat.get("output")), cost=reported_cost(chat.get("cost")) or 0.0)

    def _open_session(self, context: EngineContext, deadline: float) -> str:
        name = (context.session_name or f"gw-{context.session_id}")[:SESSION_NAME_LIMIT]
        answer = self._post("/api/sessions", {"name": name, "assistantId": self.assistant_id}, deadline)
        return id_of(self.provider, answer.get("session") if isinstance(answer, dict) else None, "created session")

    def _chat(self, context: EngineContext, turn: UserTurn, session_id: str, deadline: float):
        overrides = {"variableValues": operator_variables(context)}
        overrides.update({key: context.overrides[key] for key in ENGINE_OVERRIDES
                          if context.overrides.get(key) is not None})
        payload = {"sessionId": session_id, "input": text_with_media_note(turn), "assistantOverrides": overrides}
        return self._post("/api/chats", payload, deadline)
