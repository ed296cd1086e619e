-- Multi-server stacks (`services::catalog::Stack::members`): one request
-- makes one service per member. `stack_id` is the id of the stack's first
-- member (the service the request returned; its own row points at
-- itself), `stack_member` the member's name, and `stack_base_at` when the
-- member's own configure run (the panel's playbook) last finished, which
-- the stack's run waits for on every member.

ALTER TABLE services ADD COLUMN stack_id BIGINT REFERENCES services (id);
ALTER TABLE services ADD COLUMN stack_member TEXT;
ALTER TABLE services ADD COLUMN stack_base_at BIGINT;
CREATE INDEX services_stack ON services (stack_id) WHERE stack_id IS NOT NULL;
