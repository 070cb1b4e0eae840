/*
 * test/asan/no_swift.c: preloaded after AddressSanitizer's runtime into the
 * server of the checked build (test/asan/build.sh).
 *
 * The runtime initialises itself at the first malloc() of the process.  In
 * the server, that malloc() comes from a library constructor that runs
 * before the runtime's own (libgpg-error's bindtextdomain(), or p11-kit's
 * newlocale()), while glibc holds its locale lock.  Part of the
 * initialisation looks up "swift_demangle" with dlsym() and then calls
 * dlerror(), which translates the "undefined symbol" message and so takes
 * the same lock again: the lock's state is broken, and the process hangs
 * at the next bindtextdomain() or setlocale().  With the symbol defined
 * here, the lookup succeeds, dlerror() has nothing to translate, and no
 * lock is taken.  The runtime calls it only for Swift symbol names, which
 * the server has none of; returning NULL means "not demangled".
 */
#include <stddef.h>
#include <stdint.h>

char	   *swift_demangle(const char *mangled, size_t mangled_len, char *out,
						   size_t *out_len, uint32_t flags);

char *
swift_demangle(const char *mangled, size_t mangled_len, char *out,
			   size_t *out_len, uint32_t flags)
{
	return NULL;
}
