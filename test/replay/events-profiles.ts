/**
 * Profiles as `kpiflow ipfix dump` prints them, for the golden event recordings: kept as the
 * exact lines (64-bit flowIds would lose digits through JSON.parse), export time taken out.
 */

/** The dump's profile lines (templates 47561, 47563, 47564) without `_exportTime`, optionally only those touching `addresses`. */
export function profileLines(dump: string, addresses?: ReadonlySet<string>): string[] {
  return (
    dump
      .split('\n')
      .filter((l) => /^\{"_templateId":4756[134],/.test(l))
      .filter((l) => {
        if (!addresses) return true;
        // IPv4 travels as v4-mapped IPv6 in the profiles.
        const found = [...l.matchAll(/"(?:source|destination)IPv[46]Address":"(?:::ffff:)?([^"]+)"/g)];
        return found.some((m) => addresses.has(m[1]!));
      })
      // Export time is the one field a replay cannot reproduce: it is when the replay runs.
      .map((l) => l.replace(/,"_exportTime":"[^"]*"/, ''))
  );
}
