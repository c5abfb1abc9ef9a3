// Package cache is edged's shared HTTP cache (RFC 9111): a byte-bounded
// memory tier under S3-FIFO, an optional disk tier, request coalescing,
// revalidation, stale serving and purge. A Cache lives for the whole
// process; every route that names it wraps its origin with Handler.
//
// Where RFC 9111 leaves a choice, this cache does the following:
//
//   - Only GET responses are stored. HEAD is answered from a stored GET
//     response; a HEAD miss is forwarded as it is and not stored.
//   - Storable status codes: those with explicit freshness among 200, 203,
//     204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501; without
//     explicit freshness only the heuristically cacheable ones (or
//     "public"). 206 is never stored: the cache asks the origin for the whole
//     response (dropping Range and the client's conditionals) and cuts single
//     ranges from it, even while it arrives if its length is announced;
//     several ranges get the whole body (200).
//   - A response that is stale on arrival and has no validator is not
//     stored: it could never be reused.
//   - Heuristic freshness only with Options.Heuristic: 10% of the time since
//     Last-Modified, at most a day.
//   - private="F" and no-cache="F": the response is stored with the fields F
//     removed, so F is never sent from the cache (only to the client whose
//     request fetched it).
//   - Authorization: the response is stored only with public, s-maxage or
//     must-revalidate (RFC 9111 3.5).
//   - Stored fields: every end-to-end field as received (RFC 9111 3.1),
//     except hop-by-hop fields and those Connection names, Age (recomputed),
//     the fields named by private="..." and no-cache="...", edged's own
//     request-ID field (each hit carries its own request's ID) and edged's
//     own targeted field. Interim (1xx) responses are relayed to the client
//     whose request fetched the response and never stored.
//   - Set-Cookie is the route's choice (HandlerOptions.SetCookie): by
//     default a response carrying it is not stored (as nginx and Varnish
//     do) unless Set-Cookie is named in no-cache="..." / private="..." (then
//     it is stored without it). "store" follows RFC 9111 to the letter
//     (stored and replayed to everyone); "strip" stores the response
//     without the cookie, which goes only to the client that fetched it. A
//     Set-Cookie on a 304 that refreshes a stored response is not merged
//     into it except with "store".
//   - Targeted cache control (RFC 9213): the first of edged's own field
//     (Edged-Cache-Control by default) and CDN-Cache-Control with a valid,
//     non-empty Structured Field Dictionary decides storing and freshness
//     instead of Cache-Control and Expires; an invalid one is ignored as a
//     whole, a member of the wrong type or an unknown one is ignored. edged's
//     own field never leaves edged; CDN-Cache-Control is passed on.
//   - Dates and Age: HTTP-dates are parsed exactly as RFC 9110 5.6.7 writes
//     them (any deviation is invalid, so such an Expires means stale); of a
//     list-valued Age the first member counts, and an Age that is not a
//     non-negative integer makes the response stale (RFC 9111 5.1 lets a
//     cache ignore it instead; stale is the safe side).
//   - A 304 made from a stored response carries the fields RFC 9110 15.4.5
//     lists (Cache-Control, Content-Location, Date, ETag, Expires, Vary; and
//     Last-Modified without an ETag) and no other representation metadata.
//   - must-understand: with a status code listed above, no-store is ignored;
//     with any other status the response is not stored.
//   - immutable: while fresh, a request's no-cache or max-age=0 does not
//     force revalidation.
//   - must-revalidate, proxy-revalidate and s-maxage: never served stale, not
//     even under max-stale, stale-while-revalidate or stale-if-error; an
//     origin error is passed on.
//   - stale-if-error applies to 500, 502, 503 and 504 answers and to an
//     origin handler that fails before sending a header (the proxy answers
//     502/504 for refused connections and timeouts).
//   - Vary: several variants per URL (at most 16, the oldest goes first);
//     request fields are compared after trimming and joining their lines
//     with ", ", and Accept-Encoding in a canonical form (codings
//     lowercased and sorted, weights normalised: the same codings with the
//     same weights are one variant, whatever the order); "Vary: *" is never
//     stored. Pragma is ignored.
//   - Compression: edged's compression sits inside the cache, so each
//     coding is made once per stored response and kept as a variant; a hit
//     is the stored bytes, never compressed again.
//   - Trailers the origin sends after the body are stored and sent after
//     the body of every hit (chunked, so without Content-Length).
//   - Unsafe methods (anything but GET, HEAD, OPTIONS, TRACE) with a 2xx or
//     3xx answer invalidate (remove) the target URI and the same-origin
//     Location and Content-Location. A fetch in flight for such a URL is
//     still delivered but not stored; the same holds for purges.
//   - Coalescing: concurrent misses for one key (URL plus, when its variants
//     are known, the Vary'd request fields) share one origin request, which
//     runs detached from the client that started it. A response that may not
//     be stored releases the waiters, and the key then skips coalescing for
//     30s (hit-for-miss) so uncacheable URLs are not serialised. A body
//     over MaxObjectSize with Content-Length passes straight through; one
//     without it is still delivered to everyone waiting, but nobody new joins
//     and the key passes straight through for 30s.
//   - Storage: bodies up to MemoryObjectMax live in memory (and are written
//     to disk in the background); larger bodies stream to a file in
//     DiskDir/tmp as they arrive and are renamed into place when complete.
//     Disk entries carry CRC-32C checksums of metadata and body; a bad entry
//     is deleted, never served. A 304 rewrites a disk entry's metadata in
//     place, after its body, whatever the body's size.
package cache
