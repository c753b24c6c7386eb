"""The turn engine: a user message in, model calls and tool calls, a final answer out.

A turn appends a user message, then loops: render the branch for the model, call it, append
its reply and one call state (with its effect) per tool call it asked for, run every
call concurrently, append the results, and repeat until the model answers without tool
calls (or the model-call budget is spent); a finished state closes the turn.

The loop reads what to do next from the stack itself, so a turn interrupted by a restart
resumes where it stopped. Turns run as asyncio tasks: a caller that goes away does not
stop its turn. Every appended state is published (artifact bus) and announced (ChangeFeed)
right after it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

from p2e_kit.errors import DependencyUnavailable, FailedPrecondition, InvalidArgument, P2EError
from p2e_kit.errors import PreconditionViolation as Violation
from p2e_kit.ids import new_id
from p2e_orchestrator import behaviors, rendering
from p2e_orchestrator.agents import AgentDirectory
from p2e_orchestrator.calls import CallRunner, call_state, result_state
from p2e_orchestrator.events import StatePublisher
from p2e_orchestrator.feed import ChangeFeed, follow
from p2e_orchestrator.llm.port import ModelPort, ModelReply
from p2e_orchestrator.storage import Store
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.tool_catalog import ToolCatalog, ToolSpec
from p2e_orchestrator.tool_dispatch import ToolDispatcher
from p2e_orchestrator.turn_context import (
    CANCELLED_CODE,
    TurnContext,
    TurnLimits,
    TurnSummary,
    summary_of,
)

log = logging.getLogger(__name__)

CANCEL_WAIT_SECONDS = 5.0


class TurnEngine:
    def __init__(
        self,
        *,
        store: Store,
        agents: AgentDirectory,
        catalog: ToolCatalog,
        dispatcher: ToolDispatcher,
        model: ModelPort,
        publisher: StatePublisher,
        feed: ChangeFeed,
        limits: TurnLimits,
    ) -> None:
        from p2e_orchestrator.delegation import Delegator

        self._store = store
        self._agents = agents
        self._catalog = catalog
        self._model = model
        self._publisher = publisher
        self._feed = feed
        self._limits = limits
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()
        delegator = Delegator(
            store=store, agents=agents, engine=self, max_depth=limits.max_delegation_depth
        )
        self._calls = CallRunner(
            store=store,
            dispatcher=dispatcher,
            timeout_seconds=limits.tool_timeout_seconds,
            delegate=delegator.run,
        )

    # -- starting and following turns -------------------------------------------------

    async def send(
        self, ref: str, text: str, request_id: str = ""
    ) -> AsyncIterator[r.State | TurnSummary]:
        """SendMessage: start a turn (or find the one this request_id started) and follow it."""
        if not text.strip():
            raise InvalidArgument("the message text must not be empty", field="text")
        conversation = await self._store.get_conversation(ref)
        user = await self.start_turn(conversation, text, request_id)
        async for event in self.follow_turn(user):
            yield event

    async def start_turn(
        self, conversation: r.Conversation, text: str, request_id: str = ""
    ) -> r.State:
        """Append the user message and run the turn in the background; returns the message.

        A request id seen before returns the message it appended, appending nothing.
        """
        if not text.strip():
            raise InvalidArgument("the message text must not be empty", field="text")
        request = r.RequestKey(f"send:{conversation.id}", request_id) if request_id else None
        if request and (earlier := await self._store.lookup_request(request)):
            return await self._store.get_state(earlier)
        await self._lock(conversation.id)
        try:
            conversation = await self._store.get_conversation(conversation.id)
            ctx = await self._context(conversation)
            ctx.stack = await self._store.visible_states(ctx.branch_id)
            user = await self._append(ctx, r.NewState(r.USER_MESSAGE, text=text), request=request)
        except BaseException:
            await self._unlock(conversation.id)
            raise
        self._spawn(ctx)
        return user

    async def follow_turn(self, user: r.State) -> AsyncIterator[r.State | TurnSummary]:
        """The turn's states from its user message to its finished state, then its summary.

        A turn that ended in an error raises that error after its states.
        """
        async for state in self._states_until_finished(user):
            yield state
            if state.kind == r.FINISHED:
                yield summary_of(state)
                return

    async def wait_turn(self, user: r.State) -> r.State:
        """The finished state of the turn `user` opened."""
        async for state in self._states_until_finished(user):
            if state.kind == r.FINISHED:
                return state
        raise AssertionError("unreachable")  # pragma: no cover

    async def _states_until_finished(self, user: r.State) -> AsyncIterator[r.State]:
        states = follow(
            self._store,
            self._feed,
            conversation_id=user.conversation_id,
            branch_id=user.branch_id,
            after_seq=user.seq - 1,
            poll_seconds=self._limits.poll_seconds,
        )
        async with contextlib.aclosing(states):
            async for state in states:
                yield state
                if state.kind == r.FINISHED:
                    return

    async def _lock(self, conversation_id: str) -> None:
        """One turn at a time: IDLE -> RUNNING, or FAILED_PRECONDITION saying why not."""
        if await self._store.update_conversation(
            conversation_id, only_if_state=(r.IDLE,), state=r.RUNNING
        ):
            return
        current = await self._store.get_conversation(conversation_id)
        if current.state == r.CANCELLED:
            raise FailedPrecondition(
                f"conversation {current.name} is cancelled",
                reason="CONVERSATION_CANCELLED",
                violations=[Violation("CONVERSATION_STATE", current.id, "cancelled")],
            )
        raise FailedPrecondition(
            f"a turn is already running in conversation {current.name}",
            reason="TURN_RUNNING",
            violations=[Violation("CONVERSATION_STATE", current.id, current.state)],
        )

    async def _unlock(self, conversation_id: str) -> None:
        await self._store.update_conversation(
            conversation_id, only_if_state=(r.RUNNING,), state=r.IDLE
        )

    async def _context(self, conversation: r.Conversation) -> TurnContext:
        agent = self._agents.get(conversation.agent_id)
        overrides = conversation.overrides
        template = overrides.get("behavior_template") or agent.behavior_template
        model = agent.effective_model
        if overrides.get("llm_model"):
            model = self._agents.effective_model(overrides["llm_model"])
        return TurnContext(
            conversation=conversation,
            branch_id=conversation.active_branch_id,
            model=model,
            temperature=overrides.get("temperature"),
            system_prompt=behaviors.system_prompt(template, agent_id=agent.id),
            offered=await self._offered(list(overrides.get("tools") or agent.tools), agent.id),
        )

    async def _offered(self, names: list[str], agent_id: str) -> dict[str, ToolSpec]:
        if not names:
            return {}
        registry = await self._catalog.tools()
        missing = [n for n in names if n not in registry]
        if missing:
            log.warning(
                "%s: tools not in the registry, not offered: %s", agent_id, ", ".join(missing)
            )
        return {n: registry[n] for n in names if n in registry}

    # -- running a turn -----------------------------------------------------------------

    def _spawn(self, ctx: TurnContext) -> None:
        task = asyncio.create_task(self._run(ctx), name=f"turn-{ctx.conversation.id}")
        self._tasks[ctx.conversation.id] = task

    async def _run(self, ctx: TurnContext) -> None:
        conversation_id = ctx.conversation.id
        try:
            await self._drive(ctx)
        except asyncio.CancelledError:
            if conversation_id not in self._cancelling:
                raise  # shutting down: the conversation stays RUNNING and resumes at start-up
            self._cancelling.discard(conversation_id)
            await self._finish(
                ctx, "The conversation was cancelled.", error=(CANCELLED_CODE, "cancelled")
            )
        except P2EError as exc:
            log.warning("turn of %s failed: %s", conversation_id, exc)
            await self._finish(ctx, exc.message, error=(exc.code, exc.message))
        except Exception:
            log.exception("turn of %s failed", conversation_id)
            await self._finish(
                ctx, "The turn failed: internal error.", error=("INTERNAL", "internal error")
            )
        finally:
            self._tasks.pop(conversation_id, None)
        # No unlock: the finished state moved the conversation RUNNING -> IDLE with it (a
        # separate unlock here could release the lock of a turn started since).

    async def _drive(self, ctx: TurnContext) -> None:
        while True:
            turn = ctx.turn()
            pending = rendering.unanswered_calls(turn)
            if pending:
                for call, outcome in await self._calls.run(ctx, pending):
                    await self._append(ctx, result_state(call, outcome))
                ctx.resume = False
                continue
            last = turn[-1]
            if last.kind == r.ASSISTANT_MESSAGE and not rendering.asked_calls(last):
                await self._finish(ctx, last.text)
                return
            model_calls, _ = rendering.counts(turn)
            if model_calls >= self._limits.max_model_calls:
                text = (
                    f"I stopped after {model_calls} model calls without reaching a final answer; "
                    "please rephrase or split the request."
                )
                await self._finish(ctx, text, reason="MAX_MODEL_CALLS")
                return
            await self._append_reply(ctx, await self._complete(ctx))

    async def _complete(self, ctx: TurnContext) -> ModelReply:
        messages = rendering.render_messages(ctx.system_prompt, ctx.stack)
        tools = [spec.openai() for spec in ctx.offered.values()]
        try:
            return await self._model.complete(
                model=ctx.model, messages=messages, tools=tools, temperature=ctx.temperature
            )
        except P2EError:
            raise
        except Exception as exc:
            log.warning("model %s failed: %r", ctx.model, exc)
            raise DependencyUnavailable(
                f"the model {ctx.model} is unavailable: {exc}", reason="MODEL_UNAVAILABLE"
            ) from exc

    async def _append_reply(self, ctx: TurnContext, reply: ModelReply) -> None:
        calls: list[rendering.AskedCall] = []
        for asked in reply.tool_calls:
            call_id = new_id("st")
            taken = {c.model_id for c in calls}
            model_id = asked.id if asked.id and asked.id not in taken else call_id
            calls.append(
                rendering.AskedCall(model_id, call_id, asked.name, asked.arguments or "{}")
            )
        data: dict[str, object] = {}
        if calls:
            data["tool_calls"] = [c.to_dict() for c in calls]
        if reply.model:
            data["model"] = reply.model
        text = reply.content or ""
        reply_state = r.NewState(r.ASSISTANT_MESSAGE, text=text, data_json=_dumps(data))
        # The reply and its calls (each with its effect) in one transaction, before dispatch.
        await self._append_all(ctx, [(reply_state, None), *(call_state(c) for c in calls)])

    async def _finish(
        self,
        ctx: TurnContext,
        text: str,
        *,
        error: tuple[str, str] | None = None,
        reason: str = "",
    ) -> None:
        model_calls, tool_calls = rendering.counts(ctx.turn())
        data: dict[str, object] = {
            "model_calls": model_calls,
            "tool_calls": tool_calls,
            "waiting_for_user": False,
        }
        if error:
            data["error_code"], data["error_message"] = error
        if reason:
            data["reason"] = reason
        new = r.NewState(r.FINISHED, text=text, data_json=_dumps(data), is_error=error is not None)
        await self._append(ctx, new, end_turn=True)

    async def _append(
        self,
        ctx: TurnContext,
        new: r.NewState,
        *,
        effect: r.NewEffect | None = None,
        request: r.RequestKey | None = None,
        end_turn: bool = False,
    ) -> r.State:
        (state,) = await self._append_all(ctx, [(new, effect)], request=request, end_turn=end_turn)
        return state

    async def _append_all(
        self,
        ctx: TurnContext,
        items: list[tuple[r.NewState, r.NewEffect | None]],
        *,
        request: r.RequestKey | None = None,
        end_turn: bool = False,
    ) -> list[r.State]:
        """Store the states in one transaction, then publish and announce each in order."""
        appended = await self._store.append_states(
            conversation_id=ctx.conversation.id,
            branch_id=ctx.branch_id,
            agent_id=ctx.agent_id,
            items=items,
            request=request,
            end_turn=end_turn,
        )
        for state in appended:
            ctx.stack.append(state)
            await self._publisher.publish(state)
            self._feed.notify(ctx.conversation.id, state)
        return appended

    # -- cancel, resume, stop -------------------------------------------------------------

    async def cancel_conversation(self, conversation_id: str) -> None:
        """Mark the conversation CANCELLED and stop its running turn (which then finishes)."""
        await self._store.update_conversation(conversation_id, state=r.CANCELLED)
        task = self._tasks.get(conversation_id)
        if task is not None and not task.done():
            self._cancelling.add(conversation_id)
            task.cancel()
            await asyncio.wait([task], timeout=CANCEL_WAIT_SECONDS)

    async def resume_interrupted(self) -> int:
        """Resume the turns a previous process left RUNNING; returns how many."""
        resumed = 0
        for conversation_id in await self._store.conversation_ids_in_state(r.RUNNING):
            conversation = await self._store.get_conversation(conversation_id)
            stack = await self._store.visible_states(conversation.active_branch_id)
            if not stack or stack[-1].kind == r.FINISHED:
                await self._unlock(conversation_id)
                continue
            try:
                ctx = await self._context(conversation)
            except P2EError as exc:
                ctx = TurnContext(conversation, conversation.active_branch_id)
                ctx.stack = stack
                await self._finish(
                    ctx, f"The turn could not resume: {exc}", error=(exc.code, exc.message)
                )
                await self._unlock(conversation_id)
                continue
            ctx.stack, ctx.resume = stack, True
            log.info("resuming the interrupted turn of %s", conversation_id)
            self._spawn(ctx)
            resumed += 1
        return resumed

    async def close(self) -> None:
        """Stop running turns without finishing them (they resume at the next start)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_SECONDS)


def _dumps(data: dict[str, object]) -> str:
    return json.dumps(data) if data else ""
