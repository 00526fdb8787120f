"""What users see, built from a task: the status embed, failure reasons, domain errors."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from bot.credits import CreditKind, CreditRefusal, CreditsExceeded
from bot.images import ImageIntakeError, ImageProblem
from bot.pricing import PriceTable
from bot.quota import QuotaExceeded, QuotaKind
from bot.tasks import TaskState
from cogs.messages import describe_error, failure_reason, status_embed
from tests.cogs.helpers import make_task


def test_status_embed_speaks_the_users_language() -> None:
    embed = status_embed(make_task(), queue_position=3, quota_line="nog 4 van 5 vandaag")
    fields = {f.name: f.value for f in embed.fields}
    assert embed.title == "🎬 Videoverzoek #7"
    assert "plaats 3" in fields["Status"]
    assert "a.png" in fields["Afbeeldingen"]
    assert "10 s" in fields["Opties"]


def test_failure_reasons_are_plain_words() -> None:
    task = make_task(
        locale="en-US",
        state=TaskState.FAILED,
        error_code="provider_failed",
        status_message="risk control",
    )
    assert failure_reason(task) == "Kling couldn't make it (risk control)."
    assert "content policy" in failure_reason(replace(task, error_code="content_policy"))


def test_domain_errors_map_to_messages() -> None:
    images = ImageIntakeError(
        [ImageProblem(2, "tiny.png", "too_small", {"width": 250, "height": 250, "min": 300})]
    )
    assert "afbeelding 2 (tiny.png): 250×250 px" in describe_error("nl", images)
    assert "image 2 (tiny.png): 250×250 px, needs at least 300×300" in describe_error(
        "en-US", images
    )
    quota = QuotaExceeded(QuotaKind.DAILY_USER, 10, 10, next_free_at=1_800_000_000)
    assert (
        describe_error("en-US", quota)
        == "You've used 10 of your 10 videos for today. The next one frees <t:1800000000:R>."
    )
    assert "task 12" in describe_error("en-US", RuntimeError("boom"), task_id=12)
    assert "Traceback" not in describe_error("en-US", RuntimeError("boom"))


def test_a_credit_refusal_names_the_price_what_is_left_and_when_it_frees() -> None:
    refusal = CreditRefusal(
        CreditKind.DAILY_USER,
        price=700,
        limit=2000,
        spent=1600,
        frees_at=1_800_000_000,
        freed=700,
        mode="pro",
        duration="10",
    )
    table = PriceTable.default()
    assert describe_error("en-US", CreditsExceeded(refusal), prices=table) == (
        "A 10 s pro video costs 7 credits; you have 4 left today, "
        "7 more free up at <t:1800000000:t>."
    )
    money = replace(table, credit_price=Decimal("0.14"))
    assert describe_error("nl", CreditsExceeded(refusal), prices=money) == (
        "Een 10 s pro-video kost 7 credits (≈ 0,98 USD); je hebt vandaag nog 4 over, "
        "en 7 extra vanaf <t:1800000000:t>."
    )
