# Makefile for pgqueue (PGXS)

MODULE_big = pgqueue
OBJS = \
	src/pgqueue.o \
	src/args.o \
	src/cache.o \
	src/privilege.o \
	src/queueshm.o \
	src/watermark.o \
	src/note.o \
	src/wakeup.o \
	src/flow.o \
	src/forget.o \
	src/rows.o \
	src/push.o \
	src/pop.o \
	src/claim.o \
	src/stats.o \
	src/finish.o \
	src/expire.o \
	src/busy.o \
	src/compact.o \
	src/worker.o

EXTENSION = pgqueue
EXTVERSION := $(shell sed -n "s/^default_version = '\([^']*\)'/\1/p" $(EXTENSION).control)
PGFILEDESC = "pgqueue - job queue in numbered insert-only blocks"

# The install script of this version is made of parts, one per concern.
# Its upgrade script from the release before is that release's changes to
# tables and schemas (sql/upgrades/<from>--<to>.sql), every part that holds
# replaceable objects (functions, views and grants), then what the upgrade
# does with the new functions (sql/upgrades/<from>--<to>.post.sql).
# Scripts of released versions are kept in sql/ as they were built.
SQL_REPLACEABLE = sql/parts/queues.sql sql/parts/jobs.sql sql/parts/maintenance.sql \
	sql/parts/views.sql sql/parts/privileges.sql
UPGRADE_FROM = 0.1.0
DATA = sql/$(EXTENSION)--0.1.0.sql
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql \
	sql/$(EXTENSION)--$(UPGRADE_FROM)--$(EXTVERSION).sql

# pg_regress and the isolation tester, each on a throwaway instance with
# pgqueue preloaded and its worker off (the tests run maintain() and check
# its results)
REGRESS = $(patsubst test/sql/%.sql,%,$(sort $(wildcard test/sql/*.sql)))
REGRESS_OPTS = --inputdir=test --outputdir=test/output --load-extension=pgqueue \
	--temp-instance=tmp_check --temp-config=test/pgqueue.conf
ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --outputdir=test/output_iso --load-extension=pgqueue \
	--temp-instance=tmp_check_iso --temp-config=test/pgqueue.conf
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl
EXTRA_CLEAN = test/expected test/output test/output_iso tmp_check_pgtap

PG_CPPFLAGS = -I$(srcdir)/src -DPGQ_VERSION='"$(EXTVERSION)"'
PG_CFLAGS = -Wall -Wmissing-prototypes -Werror=implicit-function-declaration

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/parts/schemas.sql sql/parts/internal.sql \
		sql/parts/tables.sql $(SQL_REPLACEABLE)
	cat $^ > $@

sql/$(EXTENSION)--$(UPGRADE_FROM)--$(EXTVERSION).sql: \
		sql/upgrades/$(UPGRADE_FROM)--$(EXTVERSION).sql sql/parts/internal.sql \
		$(SQL_REPLACEABLE) sql/upgrades/$(UPGRADE_FROM)--$(EXTVERSION).post.sql
	cat $^ > $@

# PostgreSQL 15's pg_regress reads expected output from its input directory
test/expected:
	ln -s ../expected $@
installcheck: | test/expected

# the pgTAP suite, on a throwaway instance like the regression tests
pgtap: | test/expected
	bash test/pgtap.sh tmp_check_pgtap

.PHONY: pgtap

$(OBJS): $(wildcard src/*.h) $(EXTENSION).control

# the TAP tests (PGXS runs them at the end of installcheck too)
prove_installcheck:
	$(prove_installcheck)

.PHONY: prove_installcheck
