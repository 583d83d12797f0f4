"""A minimal Django project behind real gunicorn, for the admission control tests: a view that
keeps a thread busy, and a health view that is never shed."""
