"""gunicorn's settings for the README's deployment: `gunicorn -c python:identify.web.gunicorn_config
'identify.web:create_app()'`. Command-line options override any of them (`--workers 2`).

gunicorn listens on loopback behind a buffering reverse proxy (nginx): the proxy reads slow clients' uploads
whole, so a thread here never waits on one (see the README's deployment)."""

import os

bind = os.environ.get("IDENTIFY_BIND", "127.0.0.1:8000")
workers = 4
threads = 4  # requests one worker serves at once; their forward passes share one batch
timeout = 120  # seconds a worker may take over one request (a first forward pass on a cold machine)
graceful_timeout = 30
# No limit on the request line here: the app answers an over-long field with its own JSON 400 (text fields take
# 2,000 characters), which clients understand, where gunicorn's default (4,094 bytes) answered a bare 414 page.
# The proxy in front still bounds what reaches gunicorn (nginx: large_client_header_buffers).
limit_request_line = 0
