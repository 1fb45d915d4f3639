"""The vapi engine: a Vapi-style chat API, ``Authorization: Bearer <apiKey>`` on every call.

Engine settings: ``baseUrl`` (e.g. ``https://api.vapi.ai``), ``apiKey`` and
``assistantId`` (the remote assistant).

Per gateway session, once: ``POST {baseUrl}/session`` ``{assistantId}``,
answered with the session object (its ``id`` is kept in the engine state).
Per turn: ``POST {baseUrl}/chat`` ``{assistantId, input, sessionId,
assistantOverrides}``, answered ``{"id", "output": [{"role", "content"}],
"cost"}``.

* A server that offers no sessions answers 404 or 405 on ``/session``; the
  adapter then chains chats instead: each chat carries ``previousChatId``, the
  id of the session's last chat (kept in the engine state), and no
  ``sessionId``. The choice is remembered for the session.
* A 404 on a chat means the remote session (or the chained chat) is gone:
  Vapi sessions expire. A new session is opened (or the chain restarted) and
  the chat sent again, once; a 404 right after opening a session is raised.
* ``assistantOverrides`` carries only ``variableValues`` (see
  adapters.session_chat): Vapi's model override needs the model's provider,
  which the gateway does not know, so per-session ``model``/``temperature``/
  ``maxTokens`` are not passed.
* No media field: attachments become a note in ``input``.
"""

from __future__ import annotations

from adapters.base import EngineContext, PermanentEngineError, Reply, UserTurn, text_with_media_note
from adapters.http import EngineRefused, malformed, reported_cost, turn_deadline
from adapters.session_chat import SessionChatEngine, id_of, operator_variables, output_texts, remote_state

NO_SESSIONS = (404, 405)  # how a server without the session endpoint answers /session


class VapiEngine(SessionChatEngine):
    provider = "vapi"
    example_url = "https://api.vapi.ai"
    api_key_meaning = "the API key, sent as a Bearer token"
    assistant_id_meaning = "the id of the assistant on the Vapi side"

    @staticmethod
    def auth_headers(api_key: str) -> dict:
        return {"Authorization": f"Bearer {api_key}"}

    def reply(self, context: EngineContext, turn: UserTurn) -> Reply:
        deadline = turn_deadline(self.timeout)
        state = remote_state(context, self.provider, baseUrl=self.base_url, assistantId=self.assistant_id)
        opened_now = False
        if not state.get("chaining") and not state.get("sessionId"):
            session_id = self._open_session(deadline)
            if session_id is None:
                state["chaining"] = True
            else:
                state["sessionId"], opened_now = session_id, True
        try:
            answer = self._chat(context, turn, state, deadline)
        except EngineRefused as refused:
            if refused.status != 404 or opened_now or not (state.get("sessionId") or state.get("previousChatId")):
                raise
            self._start_over(state, deadline)
            answer = self._chat(context, turn, state, deadline)
        if not isinstance(answer, dict):
            raise malformed(self.provider, "expected a chat object")
        texts = output_texts(self.provider, answer.get("output"))
        if state.get("chaining"):
            state["previousChatId"] = id_of(self.provider, answer, "chat")
        return Reply(texts=texts, cost=reported_cost(answer.get("cost")) or 0.0)

    def _start_over(self, state: dict, deadline: float) -> None:
        """After a 404 on a chat: a fresh remote session, or a fresh chain."""
        if state.get("chaining"):
            state.pop("previousChatId")
            return
        session_id = self._open_session(deadline)
        if session_id is None:
            raise PermanentEngineError(f"{self.provider} engine stopped offering sessions mid-conversation")
        state["sessionId"] = session_id

    def _open_session(self, deadline: float) -> str | None:
        """The new remote session's id, or None when the server offers no sessions."""
        try:
            answer = self._post("/session", {"assistantId": self.assistant_id}, deadline)
        except EngineRefused as refused:
            if refused.status in NO_SESSIONS:
                return None
            raise
        return id_of(self.provider, answer, "created session")

    def _chat(self, context: EngineContext, turn: UserTurn, state: dict, deadline: float):
        payload = {"assistantId": self.assistant_id, "input": text_with_media_note(turn)}
        if state.get("chaining"):
            if state.get("previousChatId"):
                payload["previousChatId"] = state["previousChatId"]
        else:
            payload["sessionId"] = state["sessionId"]
        payload["assistantOverrides"] = {"variableValues": operator_variables(context)}
        return self._post("/chat", payload, deadline)
