-- siphon schema, version 7: S3 Inventory imports. A staged object remembers the
-- inventory file (`part`, its position in the manifest) it came from: after a crash a
-- part is cleared and staged again whole. Configured inventories (imported again at
-- every new manifest.checksum) are resources of type Inventory, in their own table.
ALTER TABLE siphon_plan_object ADD COLUMN IF NOT EXISTS part int NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS siphon_plan_object_part ON siphon_plan_object (plan, part);
