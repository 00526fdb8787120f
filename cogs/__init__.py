"""Everything a Discord user touches: commands, context menus, buttons, delivery."""
