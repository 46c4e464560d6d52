<?php
// Laravel's database session driver (Illuminate\Session\DatabaseSessionHandler, Laravel 8.83 as
// Debian bookworm's php-laravel-framework ships it), driven for tests/tests/libraries.rs.
// Usage: php laravel_sessions.php SOCKET_DIR PORT DATABASE create|gc|load [ID ...]
//   create: makes the sessions table with Laravel's schema builder as its sessions migration
//           (`php artisan session:table`) does, and saves sessions through Illuminate\Session\Store
//           last active so that they expire at each offset (Laravel's clock, Carbon::setTestNow,
//           at the offset less SESSION_LIFETIME); prints the session ids
//   gc:     Laravel's own purge, the handler's gc() with the lifetime (SESSION_LIFETIME 120 min)
//   load:   reads each ID through the handler with the real clock; prints the ids it returns
require_once '/usr/share/php/Illuminate/Database/autoload.php';
require_once '/usr/share/php/Illuminate/Session/autoload.php';

use Illuminate\Database\Capsule\Manager as Capsule;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Session\DatabaseSessionHandler;
use Illuminate\Session\Store;
use Illuminate\Support\Carbon;

const OFFSETS = [-3 * 86400, -3600, -120, 120, 3600, 14 * 86400];
const LIFETIME_MINUTES = 120;

[, $socketDir, $port, $database, $action] = $argv;
$ids = array_slice($argv, 5);
$capsule = new Capsule();
$capsule->addConnection([
    'driver' => 'pgsql', 'host' => $socketDir, 'port' => $port, 'database' => $database,
    'username' => 'postgres', 'password' => '', 'charset' => 'utf8', 'prefix' => '',
    'schema' => 'public', 'sslmode' => 'prefer',
]);
$connection = $capsule->getConnection();
// One handler per request, as Laravel has: it remembers whether the session it read exists.
$handler = fn () => new DatabaseSessionHandler($connection, 'sessions', LIFETIME_MINUTES);

switch ($action) {
    case 'create':
        $connection->getSchemaBuilder()->create('sessions', function (Blueprint $table) {
            $table->string('id')->primary();
            $table->foreignId('user_id')->nullable()->index();
            $table->string('ip_address', 45)->nullable();
            $table->text('user_agent')->nullable();
            $table->text('payload');
            $table->integer('last_activity')->index();
        });
        $now = Carbon::now();
        $created = [];
        for ($n = 0; $n < 60; $n++) {
            // Last active so that the session expires at the offset: idle for the lifetime then.
            Carbon::setTestNow($now->copy()->addSeconds(OFFSETS[$n % count(OFFSETS)] - LIFETIME_MINUTES * 60));
            $store = new Store('laravel_session', $handler());
            $store->start();
            $store->put('n', $n);
            $store->save();
            $created[] = $store->getId();
        }
        Carbon::setTestNow();
        echo json_encode($created), "\n";
        break;
    case 'gc':
        $handler()->gc(LIFETIME_MINUTES * 60);
        echo "[]\n";
        break;
    case 'load':
        $held = [];
        foreach ($ids as $id) {
            if ($handler()->read($id) !== '') {
                $held[] = $id;
            }
        }
        echo json_encode($held), "\n";
        break;
    default:
        fwrite(STDERR, "unknown action $action\n");
        exit(1);
}
