"""An ordinary Celery project, as the Celery tutorials lay one out."""

from proj.celery import app as celery_app

__all__ = ["celery_app"]
