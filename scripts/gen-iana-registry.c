/* SPDX-License-Identifier: MIT */
/*
 * Prints the IANA IPFIX information elements known to libfixbuf's
 * information model (generated upstream from IANA's ipfix.xml) as TSV:
 *   id name dataType semantics units rangeBegin rangeEnd
 * Codes are the IANA registry numbers (RFC 5610). Used once by
 * scripts/gen-iana-registry.sh to refresh ipfix/iana-elements.ts.
 */
#include <fixbuf/public.h>
#include <stdio.h>

int main(void)
{
	fbInfoModel_t *model = fbInfoModelAlloc();
	fbInfoModelIter_t iter;
	const fbInfoElement_t *ie;

	fbInfoModelIterInit(&iter, model);
	while ((ie = fbInfoModelIterNext(&iter)) != NULL) {
		if (ie->ent != 0)
			continue;
		printf("%u\t%s\t%u\t%u\t%u\t%llu\t%llu\n", ie->num, ie->ref.name,
		       ie->type, FB_IE_SEMANTIC(ie->flags), FB_IE_UNITS(ie->flags),
		       (unsigned long long)ie->min, (unsigned long long)ie->max);
	}
	fbInfoModelFree(model);
	return 0;
}
