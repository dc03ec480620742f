# Makefile for pgqueue (PGXS)

MODULE_big = pgqueue
OBJS = \
	src/pgqueue.o \
	src/cache.o \
	src/shmem.o \
	src/push.o \
	src/pop.o \
	src/finish.o \
	src/wakeup.o \
	src/flow.o \
	src/worker.o \
	src/compact.o

EXTENSION = pgqueue
DATA = sql/pgqueue--0.1.0.sql
PGFILEDESC = "pgqueue - job queue in numbered insert-only blocks"

REGRESS_OPTS = --inputdir=test --outputdir=test/output --load-extension=pgqueue
REGRESS = $(patsubst test/sql/%.sql,%,$(sort $(wildcard test/sql/*.sql)))
ISOLATION_OPTS = --inputdir=test --outputdir=test/output_iso --load-extension=pgqueue
ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wmissing-prototypes -Werror=implicit-function-declaration

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

$(OBJS): src/pgqueue.h src/shmem.h src/compat.h
