from recommendations.models import CoBooking


def recommendations_for(*, show_id: int, limit: int = 5) -> list[dict]:
    rows = CoBooking.objects.filter(show_id=show_id, count__gt=0).order_by(
        "-count", "other_show_id"
    )[:limit]
    return [{"show_id": row.other_show_id, "score": row.count} for row in rows]
