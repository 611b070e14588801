-- events.db written by main at aad0a22 (schema 1): `run.py` (the demo) then a 60-frame live run
-- (lavfi loop of the demo clip) into one recordings/ folder, dumped with sqlite3's iterdump.
BEGIN TRANSACTION;
CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        stream TEXT NOT NULL,
        kind TEXT NOT NULL,
        track_id INTEGER,
        person TEXT,
        score REAL,
        extra_json TEXT NOT NULL DEFAULT '{}'
    );
INSERT INTO "events" VALUES(1,0.4,'demo','track_started',1,NULL,0.999997615814209,'{"epoch": 0}');
INSERT INTO "events" VALUES(2,0.6,'demo','identity_assigned',1,'eileen_collins',9.46335434913635253906e-01,'{"epoch": 0, "votes": 2}');
INSERT INTO "events" VALUES(3,2.8,'demo','track_started',2,NULL,9.99773681163787841796e-01,'{"epoch": 0}');
INSERT INTO "events" VALUES(4,4.84,'demo','track_ended',2,NULL,NULL,'{"epoch": 0}');
INSERT INTO "events" VALUES(5,5.96,'demo','track_ended',1,'eileen_collins',9.63282108306884765625e-01,'{"epoch": 0}');
INSERT INTO "events" VALUES(6,1.79610157801938080789e+09,'stream0','stream_up',NULL,NULL,NULL,'{"epoch": 0, "reason": "connected to lavfi:movie=/tmp/v1run/rec/.demo/demo_input.mp4:loop=0,setpts=N/(25*TB),realtime"}');
INSERT INTO "events" VALUES(7,0.4,'stream0','track_started',1,NULL,0.999997615814209,'{"epoch": 0}');
INSERT INTO "events" VALUES(8,0.6,'stream0','identity_assigned',1,'eileen_collins',9.46335434913635253906e-01,'{"epoch": 0, "votes": 2}');
INSERT INTO "events" VALUES(9,2.36,'stream0','track_ended',1,'eileen_collins',9.63282108306884765625e-01,'{"epoch": 0}');
CREATE TABLE tracks (
        stream TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        track_id INTEGER NOT NULL,
        first_ts REAL NOT NULL,
        last_ts REAL NOT NULL,
        person TEXT,
        score REAL,
        snapshot_path TEXT,
        PRIMARY KEY (stream, epoch, track_id)
    );
INSERT INTO "tracks" VALUES('demo',0,2,4.84,4.84,NULL,NULL,NULL);
INSERT INTO "tracks" VALUES('demo',0,1,5.96,5.96,'eileen_collins',9.63282108306884765625e-01,'/tmp/v1run/rec/snapshots/demo_e0_t1.jpg');
INSERT INTO "tracks" VALUES('stream0',0,1,2.36,2.36,'eileen_collins',9.63282108306884765625e-01,'/tmp/v1run/rec/snapshots/stream0_e0_t1.jpg');
CREATE INDEX events_stream_ts ON events (stream, ts);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('events',9);
COMMIT;
