# the API and control-plane fixtures, for the reporting test over pipeline data
from tests.fixtures_api import make_app, settings, tenants  # noqa: F401
from tests.fixtures_controlplane import db_url, engine  # noqa: F401
