# Makefile: PGXS build of the jobq extension.

MODULE_big = jobq
OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))
EXTENSION = jobq
# The install and update scripts, and the control files of old versions.
DATA = $(wildcard sql/jobq--*.sql) $(wildcard sql/jobq--*.control)
PGFILEDESC = "jobq - durable background jobs inside PostgreSQL"

PG_CPPFLAGS = -Isrc
# No -Werror here: a newer compiler's new warning must not break a user's
# build.  CI adds it (COPT=-Werror, test/setup.sh).
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter \
	-Wno-missing-field-initializers -Wno-sign-compare

# PostgreSQL's CFLAGS (pg_config) carry gcc options that clang does not
# know, and its headers declare gnu_printf formats, which clang ignores:
# its warnings about those are not about jobq's code.
ifneq (,$(findstring clang,$(CC)))
PG_CFLAGS += -Wno-unknown-warning-option -Wno-ignored-optimization-argument \
	-Wno-ignored-attributes
endif

# Order matters: setup creates the extension, later files build on the
# kinds and jobs that earlier ones leave behind.
REGRESS = setup cron kinds enqueue idempotency claim_complete txclaim retry_backoff lease handlers batch job_rows toolkit bad_input walkthrough subscriptions operators compensation dependencies queues privileges security concurrency schedules deployment invariants stats wait upgrade
REGRESS_OPTS = --temp-config=$(srcdir)/test/regress.conf \
	--temp-instance=./tmp_check_regress
ENCODING = UTF8
NO_LOCALE = 1

ISOLATION = claim_exclusive enqueue_same_key kind_cache stale_token complete_race claim_many txclaim once_concurrent concurrency_key concurrency_key_rr concurrency_limit rate_limit schedule_race schedule_queue forged_locks drop_nonowner wait dependencies dependencies_order dependencies_block_order
ISOLATION_OPTS = --temp-config=$(srcdir)/test/regress.conf \
	--temp-instance=./tmp_check_iso --inputdir=$(srcdir)/test/isolation

TAP_TESTS = 1
PROVE_TESTS = $(wildcard test/t/*.pl)

EXTRA_CLEAN = tmp_check_regress results regression.diffs regression.out \
	output_iso log

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Every object depends on every header: a struct that changes shape must
# never leave an object compiled against the old one.
$(OBJS): $(wildcard src/*.h)

# A development variant with assertions compiled in, warnings as errors:
#   make COPT='-Werror -DUSE_ASSERT_CHECKING'

# The cron parser under libFuzzer (clang, libclang-rt-14-dev).
.PHONY: fuzz
fuzz:
	bash $(srcdir)/test/fuzz/run.sh
