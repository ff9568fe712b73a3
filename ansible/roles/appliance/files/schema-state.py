"""Print `current` when the database is at the code's latest schema revision, else `behind`.

Lets the playbook run `appliance db upgrade` only when there is something to do, so a second run
reports no change.
"""

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from appliance.config import Settings
from appliance.db.engine import alembic_config, make_engine

url = Settings().resolved_database_url
head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
engine = make_engine(url)
with engine.connect() as connection:
    current = MigrationContext.configure(connection).get_current_revision()
engine.dispose()
print("current" if current == head else "behind")
