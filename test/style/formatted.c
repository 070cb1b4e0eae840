/*
 * test/style/unformatted.c and formatted.c: test/style.sh --write makes
 * the second out of the first.  Never compiled.
 */
#include "postgres.h"

#include "shmem.h"

static char *slot_label(JobqWorkerSlot *slot, int n);

static char *
slot_label(JobqWorkerSlot *slot, int n)
{
	Datum	   *values = NULL;
	JobqWorkerSlot *other = slot;
	int			i,
				total = 0;

	/*
	 * This comment is too short for its lines: PostgreSQL's indent fills each
	 * of them up to the 79th column.
	 */
	for (i = 0; i < n; i++)
	{
		switch (i)
		{
			case 0:
				total += 1;
				break;
			default:
				total += i;
		}
	}
	if (values == NULL && other != NULL)
		return psprintf("%d", total);
	else
		return NULL;
}

/* A return type alone on its line keeps one space before its star. */
Datum *
slot_values(void)
{
	return NULL;
}
