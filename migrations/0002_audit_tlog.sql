CREATE TABLE `audit_tiles` (
	`level` integer NOT NULL,
	`idx` integer NOT NULL,
	`hashes` blob NOT NULL,
	PRIMARY KEY(`level`, `idx`)
);
--> statement-breakpoint
ALTER TABLE `audit_checkpoints` ADD `note` text;