"""A minimal discord.py bot proving the fake Discord and the launcher work (tests only).

It reads ``DISCORD_TOKEN``, syncs its command tree on ready and answers ``/ping`` like the real
bot answers ``/video``: defer, a followup with a file, then a channel message, a thread on it
and a message inside the thread.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Any

import discord
from discord import app_commands

SMOKE_FILE_BYTES = b"smoke test file \x00\x01\x02 bytes"
THREAD_NAME = "ping-thread"


class ClickView(discord.ui.View):
    """A persistent view with one button; a click edits the message (callback type 7)."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Click", custom_id="smoke:click", style=discord.ButtonStyle.primary)
    async def click(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.edit_message(content="clicked", view=None)


class AskModal(discord.ui.Modal, title="Ask"):
    """A modal with one text input; submitting it answers with the text (callback type 4)."""

    text: discord.ui.TextInput[AskModal] = discord.ui.TextInput(
        label="Text", custom_id="smoke:text"
    )

    def __init__(self) -> None:
        super().__init__(custom_id="smoke:modal")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"got {self.text.value}")


class SmokeBot(discord.Client):
    """discord.Client with a CommandTree holding ``/ping``; syncs globally on ready."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default())
        self.tree = app_commands.CommandTree(self)
        self.synced = False
        self.tree.command(name="ping", description="Answer pong with a file and a thread")(
            self.ping
        )
        self.tree.command(name="edit", description="Reply with a file, edit it, offer a button")(
            self.edit
        )
        self.tree.command(name="ask", description="Open a modal")(self.ask)

    async def setup_hook(self) -> None:
        self.add_view(ClickView())

    async def on_ready(self) -> None:
        if not self.synced:
            await self.tree.sync()
            self.synced = True
        print("SMOKE READY", flush=True)

    async def ping(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await interaction.followup.send(
            "pong", file=discord.File(io.BytesIO(SMOKE_FILE_BYTES), "x.txt")
        )
        channel = interaction.channel
        assert isinstance(channel, discord.TextChannel)
        starter = await channel.send("starting a thread")
        thread = await starter.create_thread(name=THREAD_NAME)
        await thread.send("inside the thread")

    async def ask(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(AskModal())

    async def edit(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(
            text, file=discord.File(io.BytesIO(SMOKE_FILE_BYTES), "y.txt")
        )
        await interaction.edit_original_response(content=f"{text} (edited)", view=ClickView())
        await interaction.followup.send("secret", ephemeral=True)


def main() -> None:
    """Run the smoke bot until terminated."""
    SmokeBot().run(os.environ["DISCORD_TOKEN"], log_level=logging.INFO)


if __name__ == "__main__":
    main()
