"""How this page's examples interleave sagas: a step holds at a gate until the story lets
it go, so two sagas interleave the same way on every run, with no sleeps and no luck."""

import asyncio
from dataclasses import dataclass, field


@dataclass
class Gate:
    reached: asyncio.Event = field(default_factory=asyncio.Event)  # a step is held here
    release: asyncio.Event = field(default_factory=asyncio.Event)  # let it go on

    async def hold(self) -> None:
        self.reached.set()
        await self.release.wait()
