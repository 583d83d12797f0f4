"""Read paths of the gateway, with the recommendations fallback chain.

Core data (shows, orders) gets no fallback: when inventory or orders cannot answer, the
client is told so (503). Recommendations are a nice-to-have: live from the recommendations
service; if that fails, the last good answer for that show; if there is none, the most
booked shows from the gateway's last good catalogue, which does not depend on the
recommendations service at all.
"""

import logging

from django.core.cache import cache
from prometheus_client import Counter

from gateway import clients

logger = logging.getLogger(__name__)

# Which link of the fallback chain answered: live, cache or popular.
recommendation_answers = Counter(
    "gateway_recommendations",
    "Recommendations the gateway answered, by the link of the fallback chain that gave them: "
    "live, cache, popular.",
    ["source"],
)


def _cache_get(key: str):
    """The cached value, or ``None`` when the cache itself fails (a hung or down Redis)."""
    try:
        return cache.get(key)
    except Exception as exc:  # the cache is a fallback: it never fails a request
        logger.warning("gateway cache unavailable (get %s): %s", key, exc)
        return None


def _cache_set(key: str, value) -> None:
    try:
        cache.set(key, value, timeout=None)
    except Exception as exc:
        logger.warning("gateway cache unavailable (set %s): %s", key, exc)


CATALOGUE_KEY = "gateway:catalogue"
RECOMMENDATIONS_KEY = "gateway:recommendations:{show_id}"
RECOMMENDATION_LIMIT = 4


def shows_list() -> list[dict]:
    shows = clients.inventory_shows()
    _cache_set(CATALOGUE_KEY, shows)
    return shows


def show_get(show_id: int) -> dict:
    return clients.inventory_show(show_id)


def _catalogue() -> list[dict]:
    """The last good list of shows; fetched if there is none yet (and then best effort)."""
    shows = _cache_get(CATALOGUE_KEY)
    if shows is None:
        try:
            shows = shows_list()
        except Exception as exc:  # popular shows are a fallback: never fail because of them
            logger.warning("no catalogue for popular shows: %s", exc)
            shows = []
    return shows


def _summaries(show_ids: list[int]) -> list[dict]:
    by_id = {show["id"]: show for show in _catalogue()}
    return [
        {
            "id": show_id,
            "title": by_id.get(show_id, {}).get("title"),
            "artist": by_id.get(show_id, {}).get("artist"),
        }
        for show_id in show_ids
    ]


def popular_shows(*, exclude: int | None = None) -> list[dict]:
    shows = sorted(_catalogue(), key=lambda s: (-s.get("seats_sold", 0), s["id"]))
    chosen = [s["id"] for s in shows if s["id"] != exclude][:RECOMMENDATION_LIMIT]
    return _summaries(chosen)


def recommendations_for(show_id: int) -> dict:
    """``{"source": "live" | "cache" | "popular", "shows": [...]}``, whatever the recommendations service does.

    The fallback goes through the recommendations policy, so with resilience off (the
    naive baseline) there is none, and a failure of recommendations is the caller's failure.
    """
    key = RECOMMENDATIONS_KEY.format(show_id=show_id)

    def fallback(exc: Exception) -> dict:
        cached = _cache_get(key)
        if cached is not None:
            return {"source": "cache", "shows": cached}
        return {"source": "popular", "shows": popular_shows(exclude=show_id)}

    live = clients.recommendations_live(show_id, fallback=fallback)
    if isinstance(live, dict):  # the fallback answered
        recommendation_answers.labels(live["source"]).inc()
        return live
    shows = _summaries([r["show_id"] for r in live][:RECOMMENDATION_LIMIT])
    _cache_set(key, shows)
    recommendation_answers.labels("live").inc()
    return {"source": "live", "shows": shows}
