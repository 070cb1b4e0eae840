/*-------------------------------------------------------------------------
 *
 * src/search_path.h
 *		A kind's search_path, resolved and safe for its role.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_SEARCH_PATH_H
#define JOBQ_SEARCH_PATH_H

extern char *JobqKindSearchPath(const char *session_path, Oid owner, bool for_handler);
extern void JobqCheckKindSearchPath(const char *path, Oid owner);
extern bool JobqSearchPathsEquivalent(const char *session_path, const char *kind_path);

#endif							/* JOBQ_SEARCH_PATH_H */
