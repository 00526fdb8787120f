"""The video feature: /video, the "Make a video" form, /quota and /tasks, the buttons under a
result, and everything between a request and its video.

- `cog`: the commands (`VideoCog`)
- `flow`: one request, from the acknowledged interaction to a queued task with its status
- `answers`: answering an interaction exactly once, through its record
- `recovery`: at start-up, the requests a killed run left open
- `status`: the public status message of a task
- `delivery`: `DiscordNotifier`, the engine's notifier: the video, failures, the log channel
- `buttons`: Regenerate, Details, Delete (they work across restarts)
"""

from __future__ import annotations

from cogs.services import ServiceBot
from cogs.video.cog import VideoCog


async def setup(bot: ServiceBot) -> None:
    """Load the cog (`bot.app` loads this extension)."""
    await bot.add_cog(VideoCog(bot))
