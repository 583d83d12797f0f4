# One image for every service; the command and DJANGO_SETTINGS_MODULE choose which one runs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 BOOKING_VAR_DIR=/var/lib/booking

WORKDIR /app
COPY pyproject.toml README.md ./
COPY booking booking
COPY resilience resilience
COPY chaos chaos
COPY workshop workshop
COPY gateway gateway
COPY orders orders
COPY payments payments
COPY inventory inventory
COPY notifications notifications
COPY recommendations recommendations
COPY manage.py ./
RUN pip install . \
    && useradd --system --home /var/lib/booking --create-home booking \
    && DJANGO_SETTINGS_MODULE=booking.settings.gateway python manage.py collectstatic --noinput \
    && chown -R booking /var/lib/booking

USER booking
CMD ["python", "-m", "gunicorn", "booking.wsgi:application", "-c", "booking/gunicorn_conf.py"]
