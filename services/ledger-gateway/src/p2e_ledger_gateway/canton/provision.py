"""Parties and the participant user: found if they exist, allocated or created once if not.

- The issuer party (`ledger.party_id` in config.json) signs every wallet. An id that exists is
  used as is; otherwise its hint (the part before "::") names it: an existing
  "<hint>::<fingerprint>" party is reused, else one is allocated. A fresh sandbox thus works
  with the default "p2engine::default". A user that may not list parties (no admin right)
  uses the configured id as is; it can move money but not create wallets.
- Each agent gets an owner party "p2e-agent-<agent id>::<fingerprint>", observer of its wallet.
- The user P2Engine acts as (the JWT `sub`) gets actAs/readAs on the issuer, when
  `manage_users` is on and the token may manage users.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from p2e_ledger_gateway.canton.client import CantonJsonClient, can_act_as, can_read_as
from p2e_ledger_gateway.canton.config import CantonSettings
from p2e_ledger_gateway.canton.errors import CantonError, unexpected

log = logging.getLogger(__name__)

AGENT_PARTY_PREFIX = "p2e-agent-"


def party_hint(party_id: str) -> str:
    """The hint part of a party id ("alice::1220ab" -> "alice")."""
    return party_id.split("::", 1)[0]


def find_party(parties: Iterable[str], hint: str) -> str | None:
    """The first party allocated with `hint`, in a stable order."""
    matches = sorted(p for p in parties if p == hint or p.startswith(f"{hint}::"))
    return matches[0] if matches else None


class Provisioner:
    """Resolves (and caches) the issuer party, the agents' owner parties and user rights."""

    def __init__(self, client: CantonJsonClient, settings: CantonSettings, party_id: str) -> None:
        self._client = client
        self._settings = settings
        self._party_id = party_id
        self._issuer: str | None = None
        self._owners: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def issuer(self) -> str:
        """The issuer party; the first call finds or allocates it and grants the user rights."""
        if self._issuer is not None:
            return self._issuer
        async with self._lock:
            if self._issuer is None:
                issuer = await self._resolve_issuer()
                if self._settings.manage_users:
                    await self._grant_user(issuer)
                log.info("canton issuer party: %s", issuer)
                self._issuer = issuer
        return self._issuer

    async def _resolve_issuer(self) -> str:
        try:
            parties = await self._client.list_parties()
        except CantonError as err:
            # A user without admin rights may not list parties; a full party id still works.
            if err.status != 403 or "::" not in self._party_id:
                raise unexpected("listing parties", err) from err
            log.warning("canton: may not list parties (%s); using %s", err.code, self._party_id)
            return self._party_id
        if self._party_id in parties:
            return self._party_id
        return await self._find_or_allocate(parties, party_hint(self._party_id))

    async def owners(self, agent_ids: Iterable[str]) -> dict[str, str]:
        """Owner party per agent id, allocating those that do not exist yet."""
        wanted = list(dict.fromkeys(agent_ids))
        async with self._lock:
            missing = [a for a in wanted if a not in self._owners]
            if missing:
                parties = await self._client.list_parties()
                for agent_id in missing:
                    hint = AGENT_PARTY_PREFIX + agent_id
                    self._owners[agent_id] = await self._find_or_allocate(parties, hint)
        return {a: self._owners[a] for a in wanted}

    async def _find_or_allocate(self, parties: list[str], hint: str) -> str:
        found = find_party(parties, hint)
        if found is not None:
            return found
        try:
            party = await self._client.allocate_party(hint)
        except CantonError as err:
            # A retried allocation whose first answer was lost: the party exists now.
            if not err.is_already_exists:
                raise unexpected(f"allocating party {hint!r}", err) from err
            party = find_party(await self._client.list_parties(), hint)
            if party is None:
                raise unexpected(f"allocating party {hint!r}", err) from err
        parties.append(party)
        log.info("canton allocated party %s", party)
        return party

    async def _grant_user(self, issuer: str) -> None:
        user_id = self._client.tokens.user_id
        rights = [can_act_as(issuer), can_read_as(issuer)]
        try:
            if await self._client.get_user(user_id) is None:
                await self._client.create_user(user_id, issuer, rights)
                log.info("canton created user %s acting as %s", user_id, issuer)
            else:
                await self._client.grant_rights(user_id, rights)
        except CantonError as err:
            if err.status != 403:
                raise unexpected(f"granting user {user_id!r} rights", err) from err
            log.warning(
                "canton user %s may not manage users (%s); grant it actAs %s by hand",
                user_id,
                err.code,
                issuer,
            )
