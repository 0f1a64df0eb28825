CREATE TABLE `audit_witness_cosignatures` (
	`witness_key` text NOT NULL,
	`origin` text NOT NULL,
	`size` integer NOT NULL,
	`root_hash` text NOT NULL,
	`timestamp` integer NOT NULL,
	`signature` text NOT NULL,
	`received_at` integer NOT NULL,
	PRIMARY KEY(`witness_key`, `origin`, `size`)
);
