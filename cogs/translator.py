"""Command names and descriptions in Dutch, for Discord clients set to Dutch."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.strings import COMMAND_TEXT, DUTCH


class KlingTranslator(app_commands.Translator):
    """Translates command texts from `bot.strings.COMMAND_TEXT`; English is the default."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        """The Dutch text for Dutch clients, else None (Discord shows the English one)."""
        if locale is discord.Locale.dutch:
            return COMMAND_TEXT[DUTCH].get(string.message)
        return None


def command_text(locale: str | None, english: str) -> str:
    """A command text (e.g. a modal label) in the locale's language."""
    if locale and locale.lower().startswith(DUTCH):
        return COMMAND_TEXT[DUTCH].get(english, english)
    return english
