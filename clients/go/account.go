package edgechat

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Deletion is the server's answer to DeleteAccount: when the account's
// data is erased and what stays.
type Deletion struct {
	UserID   string    `json:"userId"`
	DeleteAt time.Time `json:"deleteAt"`
	Kept     []Kept    `json:"kept"`
}

// Kept is one thing that stays after an account is erased.
type Kept struct {
	What   string `json:"what"`
	Detail string `json:"detail"`
}

// DeleteAccount deletes the signed-in user's account (DELETE /user/me),
// confirmed with the password. It is final: the account is disabled at
// once (this client's connection is closed by the server and its token
// refused) and its data erased after the server's grace period. A wrong
// password is an *APIError with status 403.
func (c *Client) DeleteAccount(ctx context.Context, password string) (Deletion, error) {
	tok, err := c.token(ctx)
	if err != nil {
		return Deletion{}, err
	}
	var d Deletion
	if err := doJSON(ctx, c.hc, http.MethodDelete, c.HTTPURL()+"/user/me", tok, map[string]string{"password": password}, &d); err != nil {
		return Deletion{}, fmt.Errorf("edgechat: delete account: %w", err)
	}
	return d, nil
}
