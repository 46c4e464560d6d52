<?php
// Symfony's PDO session store (PdoSessionHandler, symfony/http-foundation 5.4 as Debian
// bookworm's php-symfony-http-foundation ships it), driven for tests/tests/libraries.rs.
// Usage: php symfony_sessions.php SOCKET_DIR PORT DATABASE create|gc|load [ID ...]
//   create: makes its table (PdoSessionHandler::createTable()) and writes sessions through the
//           handler (open, read, write, close) with session.gc_maxlifetime at each offset: 5.4
//           stores time() + gc_maxlifetime in sess_lifetime, and PHP takes a negative one
//   gc:     its own purge: gc() only marks it, close() deletes what expired
//   load:   reads each ID through the handler; prints the ids it still returns data for
// session.use_strict_mode is on, so reading an unknown id does not insert a placeholder row.
require_once '/usr/share/php/Symfony/Component/HttpFoundation/autoload.php';

use Symfony\Component\HttpFoundation\Session\Storage\Handler\PdoSessionHandler;

const OFFSETS = [-3 * 86400, -3600, -120, 120, 3600, 14 * 86400];

[, $socketDir, $port, $database, $action] = $argv;
$ids = array_slice($argv, 5);
ini_set('session.use_strict_mode', '1');
$pdo = new PDO("pgsql:host=$socketDir;port=$port;dbname=$database", 'postgres', null,
               [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
$handler = new PdoSessionHandler($pdo);

switch ($action) {
    case 'create':
        $handler->createTable();
        $created = [];
        for ($n = 0; $n < 60; $n++) {
            ini_set('session.gc_maxlifetime', (string) OFFSETS[$n % count(OFFSETS)]);
            $id = session_create_id();
            $handler->open('', 'PHPSESSID');
            $handler->read($id);
            $handler->write($id, "n|i:$n;");
            $handler->close();
            $created[] = $id;
        }
        echo json_encode($created), "\n";
        break;
    case 'gc':
        $handler->open('', 'PHPSESSID');
        $handler->gc((int) ini_get('session.gc_maxlifetime'));
        $handler->close();
        echo "[]\n";
        break;
    case 'load':
        $held = [];
        foreach ($ids as $id) {
            $handler->open('', 'PHPSESSID');
            if ($handler->read($id) !== '') {
                $held[] = $id;
            }
            $handler->close();
        }
        echo json_encode($held), "\n";
        break;
    default:
        fwrite(STDERR, "unknown action $action\n");
        exit(1);
}
