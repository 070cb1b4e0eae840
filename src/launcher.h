/*-------------------------------------------------------------------------
 *
 * src/launcher.h
 *		The launcher of the per-database workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_LAUNCHER_H
#define JOBQ_LAUNCHER_H

extern void JobqRegisterLauncher(void);

#endif							/* JOBQ_LAUNCHER_H */
