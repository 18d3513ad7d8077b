"""The web console under /console/: Models, Manage API Keys and Usage pages, served by
the gateway itself (server-rendered, a little JavaScript of its own, no CDN).

routes.py: the Quart blueprint; session.py: login sessions, CSRF, the login throttle;
models_view.py, forms.py, examples.py, svg.py: pure helpers the pages are drawn from.
It reads and changes keys through gateway/api/key_admin.py, as the admin API does.
"""
