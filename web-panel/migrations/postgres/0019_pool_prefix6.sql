-- Bridged networks (`[networks.<pool>]`): the IPv6 prefix length of each
-- pool address, so a VM is given its real network (a pool generated from
-- fd00:1::/112 is a /112, not an assumed /64). NULL for addresses stored
-- before: they keep /64.
ALTER TABLE pool_addresses ADD COLUMN prefix6 BIGINT CHECK (prefix6 BETWEEN 0 AND 128);
