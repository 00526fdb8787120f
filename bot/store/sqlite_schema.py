"""The SQLite schema: one migration per version, applied in order by `bot.store.sqlite`.

It is SQLite's dialect (`AUTOINCREMENT`, `json_valid`, `ALTER TABLE ... ADD COLUMN`); a second
backend brings its own schema with the same tables and columns.
"""

from __future__ import annotations

from bot.store.rows import ACTIVE_SQL, COUNTED, SPENT, TERMINAL_SQL
from bot.tasks import TaskState

STATE_LIST = ", ".join(f"'{s.value}'" for s in TaskState)

# Each entry is one version; never edit a shipped entry, append a new one.
MIGRATIONS: tuple[str, ...] = (
    # v1: tasks
    f"""
    CREATE TABLE tasks (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        external_task_id  TEXT    NOT NULL UNIQUE,
        kling_task_id     TEXT    UNIQUE,
        user_id           INTEGER NOT NULL,
        guild_id          INTEGER,
        channel_id        INTEGER NOT NULL,
        status_message_id INTEGER,
        thread_id         INTEGER,
        result_message_id INTEGER,
        locale            TEXT    NOT NULL,
        prompt            TEXT    NOT NULL,
        options           TEXT    NOT NULL CHECK (json_valid(options)),
        image_count       INTEGER NOT NULL CHECK (image_count >= 0),
        input_dir         TEXT    NOT NULL,
        state             TEXT    NOT NULL CHECK (state IN ({STATE_LIST})),
        status_message    TEXT,
        error_code        TEXT,
        video_url         TEXT,
        video_path        TEXT,
        video_bytes       INTEGER,
        attempts          INTEGER NOT NULL DEFAULT 0,
        quota_refunded    INTEGER NOT NULL DEFAULT 0 CHECK (quota_refunded IN (0, 1)),
        callback_token    TEXT,
        upload_limit      INTEGER NOT NULL,
        created_at        REAL    NOT NULL,
        updated_at        REAL    NOT NULL,
        submitted_at      REAL,
        finished_at       REAL,
        delivered_at      REAL
    );
    CREATE INDEX idx_tasks_user_created ON tasks (user_id, created_at);
    CREATE INDEX idx_tasks_guild_created ON tasks (guild_id, created_at);
    CREATE INDEX idx_tasks_created ON tasks (created_at);
    CREATE INDEX idx_tasks_state ON tasks (state);
    """,
    # v2: what guild admins set from Discord, and a small key-value table
    """
    CREATE TABLE guild_settings (
        guild_id            INTEGER PRIMARY KEY,
        daily_per_user      INTEGER CHECK (daily_per_user >= 0),
        concurrent_per_user INTEGER CHECK (concurrent_per_user >= 0),
        daily_per_guild     INTEGER CHECK (daily_per_guild >= 0),
        log_channel_id      INTEGER
    );
    CREATE TABLE quota_overrides (
        guild_id   INTEGER NOT NULL,
        kind       TEXT    NOT NULL CHECK (kind IN ('role', 'user')),
        target_id  INTEGER NOT NULL,
        daily      INTEGER CHECK (daily >= 0),
        concurrent INTEGER CHECK (concurrent >= 0),
        exempt     INTEGER NOT NULL DEFAULT 0 CHECK (exempt IN (0, 1)),
        PRIMARY KEY (guild_id, kind, target_id)
    );
    CREATE TABLE blocked_users (
        guild_id   INTEGER NOT NULL,
        user_id    INTEGER NOT NULL,
        reason     TEXT,
        blocked_at REAL    NOT NULL,
        PRIMARY KEY (guild_id, user_id)
    );
    CREATE TABLE blocked_words (
        guild_id INTEGER NOT NULL,
        word     TEXT    NOT NULL,
        PRIMARY KEY (guild_id, word)
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # v3: admin usage resets and input retention on tasks; partial indexes that let every
    # quota count run on an index alone (only the rows that count are in them)
    f"""
    ALTER TABLE tasks ADD COLUMN quota_reset_at REAL;
    ALTER TABLE tasks ADD COLUMN inputs_removed_at REAL;
    DROP INDEX idx_tasks_created;
    CREATE INDEX idx_tasks_counted_user ON tasks (user_id, created_at) WHERE {COUNTED};
    CREATE INDEX idx_tasks_counted_guild ON tasks (guild_id, created_at) WHERE {COUNTED};
    CREATE INDEX idx_tasks_counted ON tasks (created_at) WHERE {COUNTED};
    CREATE INDEX idx_tasks_user_active ON tasks (user_id) WHERE state IN ({ACTIVE_SQL});
    """,
    # v4: how many times the current submit was POSTed, written before each POST, so a
    # restart never sends a task a third time (a task is sent again at most once)
    """
    ALTER TABLE tasks ADD COLUMN submit_posts INTEGER NOT NULL DEFAULT 0;
    """,
    # v5: nothing lost when the process dies. `notified_at`: when the user was told how the
    # task ended (its video, its failure notice, or the intake's answer); a task the user
    # wasn't told about yet is still the engine's. `log_started_at` is written before the
    # log-channel line is posted and `log_message_id` after, so a restart looks for a line that
    # may be out before posting one. `open_interactions`: every interaction the bot acknowledged
    # and still owes an answer (a /video intake, a Delete press), written when it is
    # acknowledged and removed once answered, so a restart answers each one exactly once.
    f"""
    ALTER TABLE tasks ADD COLUMN notified_at REAL;
    ALTER TABLE tasks ADD COLUMN log_started_at REAL;
    ALTER TABLE tasks ADD COLUMN log_message_id INTEGER;
    UPDATE tasks SET notified_at = COALESCE(delivered_at, finished_at, updated_at)
        WHERE state IN ({TERMINAL_SQL});
    CREATE INDEX idx_tasks_untold ON tasks (id) WHERE notified_at IS NULL;
    CREATE TABLE open_interactions (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        interaction_id   INTEGER NOT NULL UNIQUE,
        kind             TEXT    NOT NULL CHECK (kind IN ('video', 'delete')),
        application_id   INTEGER NOT NULL,
        token            TEXT    NOT NULL,
        token_expires_at REAL    NOT NULL,
        user_id          INTEGER NOT NULL,
        guild_id         INTEGER,
        channel_id       INTEGER NOT NULL,
        locale           TEXT    NOT NULL,
        payload          TEXT    NOT NULL CHECK (json_valid(payload)),
        external_task_id TEXT    UNIQUE,
        task_id          INTEGER,
        stage            TEXT    NOT NULL CHECK (stage IN ('received', 'reserved', 'started')),
        created_at       REAL    NOT NULL,
        updated_at       REAL    NOT NULL
    );
    """,
    # v6: credits. `price_cents`: what the task costs in cents of a credit, written once with
    # the insert (a price change never changes what a task reserved; NULL only for rows from
    # before, priced once at start-up by `TaskStore.price_unpriced`); `provider_deduction`: what
    # the provider said it deducted. The counted indexes carry the price, and one more holds
    # what was spent (not refunded) with every column its sums read, so the bot-wide sums
    # (a whole month of tasks) run on that index alone. Credit limits per server and per role or member, in cents of a credit. And the
    # monthly cap's alerts: claimed (started_at) before each post and completed (message_id)
    # after it, per month, threshold and log channel (channel 0: the process log).
    f"""
    ALTER TABLE tasks ADD COLUMN price_cents INTEGER CHECK (price_cents >= 0);
    ALTER TABLE tasks ADD COLUMN provider_deduction TEXT;
    DROP INDEX idx_tasks_counted_user;
    DROP INDEX idx_tasks_counted_guild;
    CREATE INDEX idx_tasks_counted_user ON tasks (user_id, created_at, price_cents)
        WHERE {COUNTED};
    CREATE INDEX idx_tasks_counted_guild ON tasks (guild_id, created_at, price_cents)
        WHERE {COUNTED};
    CREATE INDEX idx_tasks_spent ON tasks (created_at, price_cents, quota_refunded)
        WHERE {SPENT};
    CREATE INDEX idx_tasks_unpriced ON tasks (id) WHERE price_cents IS NULL;
    ALTER TABLE guild_settings ADD COLUMN credits_daily_per_user INTEGER
        CHECK (credits_daily_per_user >= 0);
    ALTER TABLE guild_settings ADD COLUMN credits_daily_per_guild INTEGER
        CHECK (credits_daily_per_guild >= 0);
    ALTER TABLE quota_overrides ADD COLUMN credits_daily INTEGER CHECK (credits_daily >= 0);
    CREATE TABLE credit_alerts (
        month       TEXT    NOT NULL,
        percent     INTEGER NOT NULL CHECK (percent IN (80, 100)),
        channel_id  INTEGER NOT NULL,
        guild_id    INTEGER,
        spent_cents INTEGER NOT NULL CHECK (spent_cents >= 0),
        cap_cents   INTEGER NOT NULL CHECK (cap_cents > 0),
        started_at  REAL    NOT NULL,
        message_id  INTEGER,
        PRIMARY KEY (month, percent, channel_id)
    );
    """,
    # v7: several processes share the work. `processes`: each bot process by its name, when it
    # started and until when it counts as alive (its heartbeat pushes that on). A task is worked
    # by one process at a time: `lease_owner` holds it until `lease_until`, renewed by its
    # owner; once expired, another process takes the task over. `open_interactions.owner`: the
    # process that acknowledged the interaction (start-up recovery leaves a live one's alone).
    """
    CREATE TABLE processes (
        name        TEXT PRIMARY KEY,
        started_at  REAL NOT NULL,
        alive_until REAL NOT NULL
    );
    ALTER TABLE tasks ADD COLUMN lease_owner TEXT;
    ALTER TABLE tasks ADD COLUMN lease_until REAL;
    CREATE INDEX idx_tasks_lease_owner ON tasks (lease_owner) WHERE notified_at IS NULL;
    ALTER TABLE open_interactions ADD COLUMN owner TEXT;
    """,
)
