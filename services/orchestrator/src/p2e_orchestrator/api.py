"""gRPC servicers: orchestrator.v1 protos <-> the domain (agents, conversations, turns)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from p2e_kit.errors import Unimplemented
from p2e_orchestrator import convert
from p2e_orchestrator.agents import AgentDirectory
from p2e_orchestrator.conversations import Conversations
from p2e_orchestrator.turn_context import TurnSummary
from p2e_orchestrator.turns import TurnEngine
from p2engine.orchestrator.v1 import orchestrator_pb2 as pb
from p2engine.orchestrator.v1 import orchestrator_service_pb2 as svc
from p2engine.orchestrator.v1 import orchestrator_service_pb2_grpc as svc_grpc


class AgentApi(svc_grpc.AgentServiceServicer):
    def __init__(self, agents: AgentDirectory) -> None:
        self._agents = agents

    async def ListAgents(
        self, request: svc.ListAgentsRequest, context: Any
    ) -> svc.ListAgentsResponse:
        agents, token = self._agents.list(
            page_size=request.page_size, page_token=request.page_token
        )
        return svc.ListAgentsResponse(
            agents=[convert.agent(a) for a in agents], next_page_token=token
        )

    async def GetAgent(self, request: svc.GetAgentRequest, context: Any) -> pb.Agent:
        return convert.agent(self._agents.get(request.id))


class ConversationApi(svc_grpc.ConversationServiceServicer):
    def __init__(self, conversations: Conversations, turns: TurnEngine) -> None:
        self._conversations = conversations
        self._turns = turns

    async def CreateConversation(
        self, request: svc.CreateConversationRequest, context: Any
    ) -> pb.Conversation:
        created = await self._conversations.create(
            request.agent_id, request.name, request.request_id
        )
        return convert.conversation(created)

    async def GetConversation(
        self, request: svc.GetConversationRequest, context: Any
    ) -> pb.Conversation:
        return convert.conversation(await self._conversations.get(request.conversation))

    async def ListConversations(
        self, request: svc.ListConversationsRequest, context: Any
    ) -> svc.ListConversationsResponse:
        page = await self._conversations.list(
            agent_id=request.agent_id, page_size=request.page_size, page_token=request.page_token
        )
        return svc.ListConversationsResponse(
            conversations=[convert.conversation(c) for c in page.items],
            next_page_token=page.next_token,
        )

    async def SendMessage(
        self, request: svc.SendMessageRequest, context: Any
    ) -> AsyncIterator[svc.SendMessageResponse]:
        async for event in self._turns.send(request.conversation, request.text, request.request_id):
            yield _send_response(event)

    async def GetStack(self, request: svc.GetStackRequest, context: Any) -> svc.GetStackResponse:
        conversation, branch, states = await self._conversations.stack(
            request.conversation, request.branch_id, request.limit
        )
        return svc.GetStackResponse(
            branch=convert.branch(branch, active_branch_id=conversation.active_branch_id),
            states=[convert.state(s) for s in states],
        )

    async def ListBranches(
        self, request: svc.ListBranchesRequest, context: Any
    ) -> svc.ListBranchesResponse:
        conversation, branches = await self._conversations.branches(request.conversation)
        active = conversation.active_branch_id
        return svc.ListBranchesResponse(
            branches=[convert.branch(b, active_branch_id=active) for b in branches]
        )

    async def Rewind(self, request: svc.RewindRequest, context: Any) -> pb.Branch:
        conversation, branch = await self._conversations.rewind(
            request.conversation, request.seq, request.branch_name, request.request_id
        )
        return convert.branch(branch, active_branch_id=conversation.active_branch_id)

    async def Checkout(self, request: svc.CheckoutRequest, context: Any) -> pb.Branch:
        conversation, branch = await self._conversations.checkout(
            request.conversation, request.branch
        )
        return convert.branch(branch, active_branch_id=conversation.active_branch_id)

    async def WatchConversation(
        self, request: svc.WatchConversationRequest, context: Any
    ) -> AsyncIterator[pb.InteractionState]:
        async for state in self._conversations.watch(request.conversation, request.after_seq):
            yield convert.state(state)

    async def SetOverrides(self, request: svc.SetOverridesRequest, context: Any) -> pb.Overrides:
        wanted = convert.overrides_dict(request.overrides)
        return convert.overrides(
            await self._conversations.set_overrides(request.conversation, wanted)
        )

    async def GetOverrides(self, request: svc.GetOverridesRequest, context: Any) -> pb.Overrides:
        return convert.overrides(await self._conversations.get_overrides(request.conversation))

    async def RespondToUser(
        self, request: svc.RespondToUserRequest, context: Any
    ) -> AsyncIterator[svc.SendMessageResponse]:
        raise Unimplemented(
            "human-in-the-loop (RespondToUser) arrives with the user-input request feature: "
            "no agent asks the user questions yet",
            reason="HUMAN_IN_THE_LOOP_UNIMPLEMENTED",
        )
        yield  # a server-streaming handler must be an async generator

    async def CancelConversation(
        self, request: svc.CancelConversationRequest, context: Any
    ) -> pb.Conversation:
        return convert.conversation(await self._conversations.cancel(request.conversation))


def _send_response(event: Any) -> svc.SendMessageResponse:
    if isinstance(event, TurnSummary):
        finished = svc.TurnFinished(
            text=event.text,
            model_calls=event.model_calls,
            tool_calls=event.tool_calls,
            waiting_for_user=event.waiting_for_user,
        )
        return svc.SendMessageResponse(finished=finished)
    return svc.SendMessageResponse(state=convert.state(event))
