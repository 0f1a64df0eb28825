CREATE TABLE `audit_checkpoints` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`kind` text NOT NULL,
	`size` integer NOT NULL,
	`head_hash` text NOT NULL,
	`time` integer NOT NULL,
	`jws` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `audit_log` (
	`seq` integer PRIMARY KEY NOT NULL,
	`entry` text NOT NULL,
	`prev_hash` text NOT NULL,
	`hash` text NOT NULL,
	`ts` integer GENERATED ALWAYS AS (json_extract(entry, '$.ts')) VIRTUAL,
	`action` text GENERATED ALWAYS AS (json_extract(entry, '$.action')) VIRTUAL,
	`actor` text GENERATED ALWAYS AS (json_extract(entry, '$.actor.name')) VIRTUAL
);
--> statement-breakpoint
CREATE INDEX `audit_ts_idx` ON `audit_log` (`ts`);--> statement-breakpoint
CREATE INDEX `audit_action_idx` ON `audit_log` (`action`);--> statement-breakpoint
CREATE TABLE `events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`type` text NOT NULL,
	`session_id` text,
	`data` text NOT NULL,
	`ts` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `events_ts_idx` ON `events` (`ts`);--> statement-breakpoint
CREATE INDEX `events_session_idx` ON `events` (`session_id`,`id`);--> statement-breakpoint
CREATE TABLE `session_logs` (
	`session_id` text NOT NULL,
	`line` integer NOT NULL,
	`stream` text NOT NULL,
	`text` text NOT NULL,
	`ts` integer NOT NULL,
	PRIMARY KEY(`session_id`, `line`)
);
--> statement-breakpoint
CREATE TABLE `sessions` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text,
	`workspace` text NOT NULL,
	`prd` text NOT NULL,
	`sandbox` integer NOT NULL,
	`budget_usd` real,
	`cost_usd` real DEFAULT 0 NOT NULL,
	`status` text NOT NULL,
	`reason` text,
	`exit_code` integer,
	`created_by` text NOT NULL,
	`created_at` integer NOT NULL,
	`started_at` integer,
	`ended_at` integer,
	`worker_id` text,
	`lease_id` text,
	`lease_expires_at` integer,
	`stop_requested` integer DEFAULT false NOT NULL,
	`last_event_seq` integer DEFAULT 0 NOT NULL,
	`log_bytes` integer DEFAULT 0 NOT NULL,
	`log_lines` integer DEFAULT 0 NOT NULL,
	`container_id` text,
	`base_branch` text,
	`agent_branch` text
);
--> statement-breakpoint
CREATE INDEX `sessions_status_idx` ON `sessions` (`status`,`created_at`);--> statement-breakpoint
CREATE TABLE `tokens` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`hash` text NOT NULL,
	`legacy_salt` text,
	`role` text NOT NULL,
	`scopes` text NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer,
	`last_used_at` integer,
	`revoked_at` integer,
	`created_by` text,
	`source` text DEFAULT 'native' NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `tokens_name_uq` ON `tokens` (`name`);--> statement-breakpoint
CREATE UNIQUE INDEX `tokens_hash_uq` ON `tokens` (`hash`);