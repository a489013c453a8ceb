package backup

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// HeaderID carries the backup's ID in the answer of GET /admin/backup.
const HeaderID = "Edgechat-Backup-Id"

// Service serves the admin endpoints of backups.
type Service struct {
	src       Source
	metrics   *Metrics
	scheduler *Scheduler // nil: no scheduled backups
	log       *slog.Logger
}

// NewService builds the endpoints over a node's source. scheduler may be
// nil.
func NewService(src Source, metrics *Metrics, scheduler *Scheduler, log *slog.Logger) (*Service, error) {
	if src.State == nil {
		return nil, errors.New("backup: no state source")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{src: src, metrics: metrics, scheduler: scheduler, log: log}, nil
}

// Scheduler is the scheduled backups' state (nil when not configured).
func (s *Service) Scheduler() *Scheduler { return s.scheduler }

// Routes: GET /admin/backup streams a backup (tar), GET
// /admin/backup/status reports the scheduled backups.
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodGet, Pattern: "/admin/backup", Handler: s.handleStream, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodGet, Pattern: "/admin/backup/status", Handler: s.handleStatus, Admin: true, Class: httpapi.ClassAdmin},
	}
}

// handleStream takes a backup from this node and streams it as a tar:
// state, segments, manifest.json (Write's order). The state is taken
// once the node has applied everything committed when the request came
// (Source.State waits for it), so every write acknowledged before the
// request is in it.
func (s *Service) handleStream(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	tw := tar.NewWriter(w)
	began := false
	sink := &TarSink{W: tw, OnID: func(id string) {
		began = true
		w.Header().Set("Content-Type", "application/x-tar")
		w.Header().Set(HeaderID, id)
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
	}}
	// Marked as taken by hand: the schedule's prune leaves it alone.
	src, info := s.src, s.src.Info
	src.Info = func() Manifest {
		var m Manifest
		if info != nil {
			m = info()
		}
		m.Kind = KindStream
		return m
	}
	m, err := Write(r.Context(), src, sink)
	s.metrics.observe("stream", time.Since(start), m, err)
	switch {
	case err == nil:
		if cerr := tw.Close(); cerr != nil {
			s.log.Warn("backup stream not finished", "err", cerr)
			return
		}
		s.log.Info("backup streamed", "id", m.ID, "applied_index", m.AppliedIndex, "bytes", m.Bytes(),
			"segments", m.Segments(), "took", time.Since(start))
	case began:
		s.log.Error("backup stream failed", "err", err)
		WriteTarError(tw, err)
	case errors.Is(err, wire.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded):
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: err.Error(), RetryAfter: time.Second})
	default:
		httpapi.WriteError(w, fmt.Errorf("backup: %w", err))
	}
}

func (s *Service) handleStatus(w http.ResponseWriter, r *http.Request) {
	if s.scheduler == nil {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"scheduled": false})
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"scheduled": true, "status": s.scheduler.Status()})
}
