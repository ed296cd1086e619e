-- E-mail targets: how the SMTP connection is secured ('none': plain,
-- 'starttls': upgraded before anything is sent, 'tls': TLS from the first
-- byte) and an extra CA certificate (PEM) to trust for that server.
ALTER TABLE notification_targets ADD COLUMN smtp_tls TEXT NOT NULL DEFAULT 'none';
ALTER TABLE notification_targets ADD COLUMN smtp_ca TEXT;
